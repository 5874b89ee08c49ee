//! The callbacks that track plugins and streams (see `contexts`). The benchmark probe
//! (bench/noop-filter) includes this file too, so it pays per stream exactly what the filter does;
//! each crate names its configuration type `PluginConfig` at its root.

use std::cell::RefCell;

use crate::contexts::Contexts;
use crate::host;

thread_local! {
    pub static CONTEXTS: RefCell<Contexts<crate::PluginConfig>> = RefCell::new(Contexts::default());
}

/// Envoy loads a module only if it exports the ABI version it was written for.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> u32 {
    host::install_logger();
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    CONTEXTS.with(|contexts| contexts.borrow_mut().created(context_id, parent_context_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    CONTEXTS.with(|contexts| contexts.borrow_mut().deleted(context_id));
}
