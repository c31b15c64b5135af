fn main() {
    std::process::exit(tendr_node::cli::main());
}
