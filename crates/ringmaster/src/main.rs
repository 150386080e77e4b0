//! The `ringmaster` command line: run mode (Cyrus master's flags), `check` and `demo`.

fn main() {
    println!("ringmaster");
}
