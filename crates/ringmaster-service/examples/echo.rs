//! The smallest ringmaster-service worker: greet with the pid, echo lines until QUIT or EOF.

use std::io::{BufRead, BufReader, Write};

use ringmaster_service::{Options, Worker};

fn main() {
    let worker = Worker::from_env_or_exit();
    let max_uses = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(ringmaster_service::DEFAULT_MAX_USES);
    let pid = worker.pid();
    let options = Options {
        max_uses,
        ..Options::default()
    };
    worker.run(options, |stream| {
        stream.write_all(format!("* OK {pid}\r\n").as_bytes())?;
        let mut lines = BufReader::new(stream.try_clone()?).lines();
        while let Some(line) = lines.next().transpose()? {
            if line.trim() == "QUIT" {
                break;
            }
            stream.write_all(format!("{}\r\n", line.trim_end()).as_bytes())?;
        }
        Ok(())
    })
}
