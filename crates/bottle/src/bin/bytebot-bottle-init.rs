//! The bottle's in-sandbox init as a small standalone program (tests use it; the `bytebot`
//! CLI runs the same code through a hidden subcommand).

fn main() {
    let code = bytebot_bottle::sandbox::init_main(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
