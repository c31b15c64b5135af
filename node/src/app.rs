//! The door through which the user's application enters the real node: an [`AppFactory`]
//! builds a fresh [`Application`] for a chain id. `tendr_node::cli::main_with` takes one and
//! gives the whole `tendr` command line for that application; the built-in key-value app goes
//! through the same door (`main_with(tendr_kv::KvApp::new)`).

use tendr_core::traits::Application;
use tendr_core::types::Hash;

/// Builds the application a node runs, fresh for a chain id (its state before the first
/// block).
///
/// Implemented by every `Fn(&str) -> A` closure or function that is `Send + Sync + 'static`,
/// with `A: Application + Send + 'static`, so `tendr_kv::KvApp::new` or
/// `|chain_id: &str| MyApp::new(chain_id)` can be passed as is.
///
/// The node calls it more than once: for the genesis app hash (`init`, `testnet`, and every
/// check of a `genesis.json`), to rebuild the transaction history after a crash, and for the
/// running node. Each call must give the same application for the same chain id: the app
/// hash of a fresh application goes into `genesis.json`, and a node whose factory disagrees
/// refuses that genesis.
pub trait AppFactory: Send + Sync + 'static {
    /// The application built.
    type App: Application + Send + 'static;
    /// A fresh application for `chain_id`.
    fn make(&self, chain_id: &str) -> Self::App;
    /// The app hash of a fresh application for `chain_id` (the genesis `app_hash`).
    fn initial_app_hash(&self, chain_id: &str) -> Hash {
        self.make(chain_id).initial_app_hash()
    }
    /// Whether two applications it makes are independent (in-process state). `false` for a
    /// handle on one external process (an ABCI application): the node then executes the
    /// stored blocks only in the application it runs, and does not rebuild a missing
    /// transaction history with a second one (that would execute the blocks twice).
    fn independent_instances(&self) -> bool {
        true
    }
    /// Whether the node submits the evidence its engine finds (a validator's two conflicting
    /// votes) as a [`tendr_core::governance::evidence_tx`] transaction, so that it is committed
    /// in a block. The application must then route that transaction to the framework, as
    /// `tendr_kv::KvApp` does with [`tendr_core::governance::Approvals::execute`].
    fn commits_evidence(&self) -> bool {
        true
    }
}

impl<A, F> AppFactory for F
where
    A: Application + Send + 'static,
    F: Fn(&str) -> A + Send + Sync + 'static,
{
    type App = A;
    fn make(&self, chain_id: &str) -> A {
        self(chain_id)
    }
}
