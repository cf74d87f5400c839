fn main() {
    println!("burn {}", env!("CARGO_PKG_VERSION"));
}
