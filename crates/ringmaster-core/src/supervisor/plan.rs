//! What a reload onto a new configuration would do, without doing it (`ringmaster reload
//! --dry-run`): the same matching rules as `apply_reload` (reload.rs), `reload_events`
//! (events.rs) and `reload_daemons` (daemons.rs), as plain data.

use super::*;
use crate::config::Config;

/// What a reload does to one SERVICES entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceChange {
    /// Same name, listen and proto: its sockets are kept, its workers recycled.
    Kept,
    /// Same name, new listen or proto: new sockets are bound, the old ones closed.
    Rebound,
    /// A new name: bound and started.
    Added,
    /// Gone from the configuration: its sockets close, its workers drain.
    Removed,
    /// Its program or user cannot be resolved now: it goes on as it runs.
    Untouched,
}

impl ServiceChange {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceChange::Kept => "kept",
            ServiceChange::Rebound => "rebound",
            ServiceChange::Added => "added",
            ServiceChange::Removed => "removed",
            ServiceChange::Untouched => "untouched",
        }
    }
}

/// What a reload does to an EVENTS or DAEMON entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryChange {
    /// Exactly as it was (events keep their schedule; daemons are still restarted).
    Same,
    /// Its definition changed.
    Changed,
    Added,
    Removed,
    /// Its program or user cannot be resolved now: it goes on as it runs.
    Untouched,
}

impl EntryChange {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryChange::Same => "same",
            EntryChange::Changed => "changed",
            EntryChange::Added => "added",
            EntryChange::Removed => "removed",
            EntryChange::Untouched => "untouched",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub name: String,
    /// The new `listen=` (the old one for a removed service).
    pub listen: String,
    /// For a rebound service: where it listens now.
    pub old_listen: Option<String>,
    pub change: ServiceChange,
    /// Running workers the reload recycles (all of a kept, rebound or removed service's).
    pub recycle: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPlan {
    pub name: String,
    pub change: EntryChange,
}

/// Everything a reload onto a configuration would change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    pub services: Vec<ServicePlan>,
    pub events: Vec<EntryPlan>,
    /// Every daemon that runs on is restarted by a reload, changed or not.
    pub daemons: Vec<EntryPlan>,
    /// Workers recycled in all.
    pub recycle: u32,
}

impl Supervisor {
    /// What reloading onto `new` would do now. Pure and read-only: nothing is applied.
    pub fn plan(&self, new: &Config) -> ReloadPlan {
        let live: Vec<(&ServiceKey, &Service)> =
            self.services.iter().filter(|(_, s)| !s.retiring).collect();
        let unresolved = |names: &[String], name: &str| names.iter().any(|n| n == name);
        let mut plan = ReloadPlan::default();
        let mut matched: Vec<ServiceKey> = Vec::new();
        for spec in &new.services {
            let same = live.iter().find(|(_, s)| {
                s.spec.name == spec.name
                    && s.spec.listen == spec.listen
                    && s.spec.proto == spec.proto
            });
            let renamed = live.iter().find(|(_, s)| s.spec.name == spec.name);
            let (change, old, key) = match (same, renamed) {
                (Some((k, _)), _) => (ServiceChange::Kept, None, Some(**k)),
                (None, Some((k, s))) => (
                    ServiceChange::Rebound,
                    Some(s.spec.listen.to_string()),
                    Some(**k),
                ),
                (None, None) => (ServiceChange::Added, None, None),
            };
            matched.extend(key);
            plan.services.push(ServicePlan {
                name: spec.name.clone(),
                listen: spec.listen.to_string(),
                old_listen: old,
                change,
                recycle: key.map_or(0, |k| self.workers_of_service(k)),
            });
        }
        for (key, s) in &live {
            if matched.contains(key) {
                continue;
            }
            let kept_as_is = unresolved(&new.unresolved.services, &s.spec.name);
            plan.services.push(ServicePlan {
                name: s.spec.name.clone(),
                listen: s.spec.listen.to_string(),
                old_listen: None,
                change: if kept_as_is {
                    ServiceChange::Untouched
                } else {
                    ServiceChange::Removed
                },
                recycle: if kept_as_is {
                    0
                } else {
                    self.workers_of_service(**key)
                },
            });
        }
        plan.recycle = plan.services.iter().map(|s| s.recycle).sum();
        let old_events: Vec<(&str, bool)> = self
            .events
            .iter()
            .map(|e| (e.spec.name.as_str(), new.events.contains(&e.spec)))
            .collect();
        plan.events = entry_changes(
            &old_events,
            new.events.iter().map(|e| e.name.as_str()),
            &new.unresolved.events,
        );
        let old_daemons: Vec<(&str, bool)> = self
            .daemons
            .iter()
            .filter(|d| d.next != daemons::DaemonNext::Remove)
            .map(|d| (d.spec.name.as_str(), new.daemons.contains(&d.spec)))
            .collect();
        plan.daemons = entry_changes(
            &old_daemons,
            new.daemons.iter().map(|d| d.name.as_str()),
            &new.unresolved.daemons,
        );
        plan
    }

    fn workers_of_service(&self, key: ServiceKey) -> u32 {
        let count = self
            .workers
            .values()
            .filter(|w| w.pool.service == key && !w.recycle.hupped())
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// Old entries (name, found unchanged in the new config) against the new names.
fn entry_changes<'a>(
    old: &[(&str, bool)],
    new: impl Iterator<Item = &'a str>,
    unresolved: &[String],
) -> Vec<EntryPlan> {
    let mut out: Vec<EntryPlan> = new
        .map(|name| EntryPlan {
            name: name.to_string(),
            change: match old.iter().find(|(n, _)| *n == name) {
                Some((_, true)) => EntryChange::Same,
                Some((_, false)) => EntryChange::Changed,
                None => EntryChange::Added,
            },
        })
        .collect();
    for (name, _) in old {
        if !out.iter().any(|e| e.name == *name) {
            let change = if unresolved.iter().any(|n| n == name) {
                EntryChange::Untouched
            } else {
                EntryChange::Removed
            };
            out.push(EntryPlan {
                name: name.to_string(),
                change,
            });
        }
    }
    out
}
