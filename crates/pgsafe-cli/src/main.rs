fn main() {
    println!("pgsafe {}", env!("CARGO_PKG_VERSION"));
}
