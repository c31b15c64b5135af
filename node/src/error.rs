//! Errors for people: each names the thing, the value and the fix, and maps to an exit status.

/// Exit status for bad input (config, genesis, keys, arguments, refused requests).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status for failures at run time (a node that cannot be reached, a store that fails).
pub const EXIT_FAILURE: i32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    /// Bad input from a person or a file: exit status 2.
    pub fn input(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_BAD_INPUT,
        }
    }
    /// A failure at run time: exit status 1.
    pub fn failure(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;
