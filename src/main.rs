#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(tendr_node::cli::main_with(tendr_kv::KvApp::new));
}
