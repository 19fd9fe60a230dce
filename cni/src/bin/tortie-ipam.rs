//! `tortie-ipam`: the IPAM-only CNI plugin (see the crate docs).
fn main() {
    std::process::exit(tortie_cni::plugin::main(
        tortie_cni::plugin::Flavour::IpamOnly,
    ));
}
