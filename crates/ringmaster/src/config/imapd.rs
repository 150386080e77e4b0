//! imapd.conf: the `key: value` file of which the master needs a few options.

use std::collections::HashMap;

/// The options of an imapd.conf, keys lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImapdConf {
    pub options: HashMap<String, String>,
}

impl ImapdConf {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }
}
