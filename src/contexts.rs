//! Which plugin each stream belongs to, and each plugin's configuration.
//!
//! Envoy runs plugins that load the same module with the same VM settings in one VM, each as a
//! root context with its own configuration; every stream is created under one of them. A stream
//! keeps the configuration its plugin had when the stream started, so an update never changes
//! the rules in the middle of a request.

use std::collections::HashMap;
use std::rc::Rc;

pub struct Contexts<T> {
    /// Root contexts, with their configuration once one was accepted.
    plugins: HashMap<u32, Option<Rc<T>>>,
    streams: HashMap<u32, Option<Rc<T>>>,
}

impl<T> Default for Contexts<T> {
    fn default() -> Self {
        Contexts {
            plugins: HashMap::new(),
            streams: HashMap::new(),
        }
    }
}

impl<T> Contexts<T> {
    /// A root context has no parent (0); anything else is a stream of its parent plugin.
    pub fn created(&mut self, context_id: u32, parent_context_id: u32) {
        if parent_context_id == 0 {
            self.plugins.insert(context_id, None);
        } else {
            let config = self.plugins.get(&parent_context_id).cloned().flatten();
            self.streams.insert(context_id, config);
        }
    }

    pub fn configured(&mut self, root_context_id: u32, config: T) {
        self.plugins.insert(root_context_id, Some(Rc::new(config)));
    }

    pub fn deleted(&mut self, context_id: u32) {
        if self.streams.remove(&context_id).is_none() {
            self.plugins.remove(&context_id);
        }
    }

    /// The configuration a stream runs with; `None` if its plugin has none.
    pub fn of_stream(&self, context_id: u32) -> Option<Rc<T>> {
        self.streams.get(&context_id).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn each_stream_runs_with_its_own_plugins_config() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.created(2, 0);
        contexts.configured(1, "one");
        contexts.configured(2, "two");
        contexts.created(10, 1);
        contexts.created(11, 2);
        assert_eq!(contexts.of_stream(10).as_deref(), Some(&"one"));
        assert_eq!(contexts.of_stream(11).as_deref(), Some(&"two"));
    }

    #[test]
    fn a_stream_keeps_the_config_it_started_with() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.configured(1, "old");
        contexts.created(10, 1);
        contexts.configured(1, "new");
        contexts.created(11, 1);
        assert_eq!(contexts.of_stream(10).as_deref(), Some(&"old"));
        assert_eq!(contexts.of_stream(11).as_deref(), Some(&"new"));
    }

    #[test]
    fn a_stream_of_an_unconfigured_plugin_has_no_config() {
        let mut contexts: Contexts<&str> = Contexts::default();
        contexts.created(1, 0);
        contexts.created(10, 1);
        contexts.created(11, 99);
        assert_eq!(contexts.of_stream(10), None);
        assert_eq!(contexts.of_stream(11), None);
        assert_eq!(contexts.of_stream(12), None);
    }

    #[test]
    fn deleting_a_plugin_leaves_its_live_streams_running() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.configured(1, "config");
        contexts.created(10, 1);
        contexts.deleted(1);
        assert_eq!(contexts.of_stream(10).as_deref(), Some(&"config"));
        contexts.created(11, 1);
        assert_eq!(contexts.of_stream(11), None);
    }

    #[test]
    fn deleted_streams_are_forgotten() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.configured(1, "config");
        for stream in 10..1010 {
            contexts.created(stream, 1);
            contexts.deleted(stream);
        }
        assert!(contexts.streams.is_empty());
        assert_eq!(contexts.plugins.len(), 1);
    }
}
