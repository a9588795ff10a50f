//! The bottle's in-sandbox init as a standalone program (the same code `bytebot __bottle-init`
//! runs): set `GatewayConfig::bottle_init` to this program's path, with no leading argument.

fn main() {
    let code = bytebot_bottle::sandbox::init_main(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
