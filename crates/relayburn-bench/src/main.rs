fn main() {
    println!("relayburn-bench {}", env!("CARGO_PKG_VERSION"));
}
