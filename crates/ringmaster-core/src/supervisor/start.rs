//! Start-up: START commands one at a time, in order, then the DAEMON entries (waiting for
//! `wait=y` ones to say "ok"), then the services and events.

use super::*;

impl Supervisor {
    pub(super) fn run_next_start_command(&mut self, now: Now, out: &mut Vec<Action>) {
        let Phase::StartCommands {
            next,
            running: None,
        } = self.phase
        else {
            return;
        };
        if let Some(entry) = self.config.start.get(next) {
            self.logs
                .info(
                    LogEvent::StartCommand,
                    format!("running START {}: {}", entry.name, entry.cmd),
                )
                .with(Field::Entry, &entry.name);
            out.push(Action::Spawn(SpawnRequest {
                role: Role::Start { index: next },
                name: entry.name.clone(),
                argv: entry.cmd.argv.clone(),
                env: self.settings.worker_env.clone(),
                run_as: entry.run_as.clone(),
                maxfds: 0,
                fds: ChildFds::None,
            }));
            return;
        }
        self.phase = Phase::WaitDaemons;
        for spec in self.config.daemons.clone() {
            self.daemons.push(Daemon::new(spec, None));
        }
        for index in 0..self.daemons.len() {
            self.spawn_daemon(index, out);
        }
        self.finish_start_if_daemons_ready(now, out);
    }

    pub(super) fn finish_start_if_daemons_ready(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.phase != Phase::WaitDaemons {
            return;
        }
        if self.daemons.iter().any(|d| d.spec.wait && !d.ready) {
            return;
        }
        self.phase = Phase::Running;
        for spec in self.config.services.clone() {
            self.add_service(spec, Vec::new(), out);
        }
        let binds = self.config.services.len();
        self.events = self
            .config
            .events
            .clone()
            .into_iter()
            .map(|spec| self.new_event(spec, now))
            .collect();
        // Action::Ready follows once every bind has an outcome (faults.rs).
        self.expect_startup_binds(binds, out);
    }

    pub(super) fn on_start_command_exit(
        &mut self,
        index: usize,
        pid: Pid,
        status: ExitStatus,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Phase::StartCommands { next, running } = self.phase else {
            return;
        };
        if next != index || running != Some(pid) {
            return;
        }
        let name = self
            .config
            .start
            .get(index)
            .map_or("?", |s| s.name.as_str())
            .to_string();
        if status == ExitStatus::Code(0) {
            self.phase = Phase::StartCommands {
                next: next + 1,
                running: None,
            };
            self.run_next_start_command(now, out);
        } else {
            self.logs
                .error(
                    LogEvent::StartFailed,
                    format!("START {name} failed ({status}); not starting"),
                )
                .with(Field::Entry, &name)
                .with(Field::Pid, pid)
                .with(Field::Status, status);
            self.begin_stop(now, EXIT_START_FAILED, out);
        }
    }
}
