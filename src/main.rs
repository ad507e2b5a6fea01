//! The binary: everything is in the library's `commands` module.

fn main() -> std::process::ExitCode {
    zoom_dept_sync::commands::main()
}
