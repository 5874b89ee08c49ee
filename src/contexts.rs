//! Which plugin each request belongs to, and each plugin's configuration.
//!
//! Envoy runs plugins that load the same module with the same VM settings in one VM, each as a
//! root context with its own configuration; every stream is created under one of them. A stream
//! is remembered only until its request headers, where the filter does all its work.

use std::collections::HashMap;
use std::rc::Rc;

/// Streams remembered at most. Only a stream that reaches neither its request headers nor its
/// deletion stays longer: Envoy creates a stream's context late, after its deletion, to log an
/// HTTP/3 request that never reached this filter. Past the limit the oldest are forgotten.
const PENDING_STREAMS_LIMIT: usize = 1 << 16;

pub struct Contexts<T> {
    /// Root contexts, with their configuration once one was accepted.
    plugins: HashMap<u32, Option<Rc<T>>>,
    /// Streams not yet at their request headers, with their plugin's root context.
    pending_streams: HashMap<u32, u32>,
}

/// The configuration to route a request with.
#[derive(Debug, PartialEq)]
pub enum RequestConfig<T> {
    /// Its plugin's, or none if the plugin has no valid configuration.
    Known(Option<Rc<T>>),
    /// Its stream was forgotten and several plugins share the VM: any of theirs.
    Ambiguous(Vec<Rc<T>>),
}

impl<T> Default for Contexts<T> {
    fn default() -> Self {
        Contexts {
            plugins: HashMap::new(),
            pending_streams: HashMap::new(),
        }
    }
}

impl<T> Contexts<T> {
    /// A root context has no parent (0); anything else is a stream of its parent plugin.
    pub fn created(&mut self, context_id: u32, parent_context_id: u32) {
        if parent_context_id == 0 {
            self.plugins.entry(context_id).or_insert(None);
            return;
        }
        self.pending_streams.insert(context_id, parent_context_id);
        if self.pending_streams.len() > PENDING_STREAMS_LIMIT {
            // Context ids only grow: keep the newest half, so this runs once per half a limit.
            let oldest_kept = context_id.saturating_sub((PENDING_STREAMS_LIMIT / 2) as u32);
            self.pending_streams.retain(|stream, _| *stream >= oldest_kept);
        }
    }

    pub fn configured(&mut self, root_context_id: u32, config: T) {
        self.plugins.insert(root_context_id, Some(Rc::new(config)));
    }

    pub fn deleted(&mut self, context_id: u32) {
        if self.pending_streams.remove(&context_id).is_none() {
            self.plugins.remove(&context_id);
        }
    }

    /// The configuration for a stream's request headers; the stream is forgotten after it.
    pub fn for_request(&mut self, context_id: u32) -> RequestConfig<T> {
        if let Some(plugin) = self.pending_streams.remove(&context_id) {
            return RequestConfig::Known(self.plugins.get(&plugin).cloned().flatten());
        }
        let configs: Vec<Rc<T>> = self.plugins.values().flatten().cloned().collect();
        match <[Rc<T>; 1]>::try_from(configs) {
            Ok([only]) => RequestConfig::Known(Some(only)),
            Err(none) if none.is_empty() => RequestConfig::Known(None),
            Err(several) => RequestConfig::Ambiguous(several),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn known(config: &str) -> RequestConfig<&str> {
        RequestConfig::Known(Some(Rc::new(config)))
    }

    #[test]
    fn each_request_is_routed_with_its_own_plugins_config() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.created(2, 0);
        contexts.configured(1, "one");
        contexts.configured(2, "two");
        contexts.created(10, 1);
        contexts.created(11, 2);
        assert_eq!(contexts.for_request(10), known("one"));
        assert_eq!(contexts.for_request(11), known("two"));
    }

    #[test]
    fn a_request_gets_the_config_in_force_at_its_headers() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.configured(1, "old");
        contexts.created(10, 1);
        contexts.configured(1, "new");
        assert_eq!(contexts.for_request(10), known("new"));
    }

    #[test]
    fn a_plugin_created_again_keeps_its_config() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.configured(1, "config");
        contexts.created(1, 0);
        contexts.created(10, 1);
        assert_eq!(contexts.for_request(10), known("config"));
    }

    #[test]
    fn a_stream_of_an_unconfigured_plugin_has_no_config() {
        let mut contexts: Contexts<&str> = Contexts::default();
        contexts.created(1, 0);
        contexts.created(2, 0);
        contexts.configured(2, "config");
        contexts.created(10, 1);
        assert_eq!(contexts.for_request(10), RequestConfig::Known(None));
    }

    #[test]
    fn an_unknown_stream_gets_the_only_config_or_all_of_them() {
        let mut contexts = Contexts::default();
        assert_eq!(contexts.for_request(10), RequestConfig::Known(None));
        contexts.created(1, 0);
        contexts.configured(1, "one");
        contexts.created(2, 0);
        assert_eq!(contexts.for_request(10), known("one"));
        contexts.configured(2, "two");
        let RequestConfig::Ambiguous(mut configs) = contexts.for_request(10) else {
            panic!("two plugins are configured")
        };
        configs.sort();
        assert_eq!(configs, vec![Rc::new("one"), Rc::new("two")]);
    }

    #[test]
    fn streams_are_forgotten_at_their_request_or_deletion() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.configured(1, "config");
        for stream in 10..1010 {
            contexts.created(stream, 1);
            if stream % 2 == 0 {
                contexts.for_request(stream);
            }
            contexts.deleted(stream);
        }
        assert!(contexts.pending_streams.is_empty());
        assert_eq!(contexts.plugins.len(), 1);
    }

    #[test]
    fn streams_that_are_never_deleted_are_bounded() {
        let mut contexts = Contexts::default();
        contexts.created(1, 0);
        contexts.configured(1, "config");
        let last = 10 + 3 * PENDING_STREAMS_LIMIT as u32;
        for stream in 10..=last {
            contexts.created(stream, 1);
        }
        assert!(contexts.pending_streams.len() <= PENDING_STREAMS_LIMIT);
        assert!(contexts.pending_streams.contains_key(&last));
        assert_eq!(contexts.for_request(last), known("config"));
    }
}
