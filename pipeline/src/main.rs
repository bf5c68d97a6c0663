fn main() -> std::process::ExitCode {
    crowsnest::cli::main()
}
