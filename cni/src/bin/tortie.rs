//! `tortie`: the CNI plugin (see the crate docs).
fn main() {
    std::process::exit(tortie_cni::plugin::main(tortie_cni::plugin::Flavour::Main));
}
