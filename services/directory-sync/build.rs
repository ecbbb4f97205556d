//! Embedded migrations are read at compile time; tell cargo to rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
