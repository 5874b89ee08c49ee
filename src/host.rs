//! The proxy-wasm host calls the filter makes (ABI 0.2.1), as safe functions.
//!
//! Statuses stay raw `u32`s, so a value this code does not know is an error, never undefined
//! behaviour, and nothing here unwraps: a panic would stop the VM and fail every later request on
//! the worker. Values are bytes: header values and names need not be UTF-8.

use std::mem::MaybeUninit;
use std::ptr::null_mut;

const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;

pub const MAP_HTTP_REQUEST_HEADERS: u32 = 0;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

/// A host call that did not succeed, with the host's status.
#[derive(Debug, Clone, Copy)]
pub struct Failed(pub u32);

extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}

/// The host copies every value it returns into memory it allocates through this export; the
/// functions below take ownership of that memory as a `Vec`.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    Box::into_raw(Box::<[MaybeUninit<u8>]>::new_uninit_slice(size)).cast()
}

/// Makes a host call that returns a value in memory from `proxy_on_memory_allocate`.
pub fn returned_bytes(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Failed> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    match call(&mut data, &mut size) {
        STATUS_OK if data.is_null() => Ok(Some(Vec::new())),
        // SAFETY: on success the host hands over `size` bytes it allocated with
        // `proxy_on_memory_allocate(size)`, which has exactly this layout.
        STATUS_OK => Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) })),
        STATUS_NOT_FOUND => Ok(None),
        status => Err(Failed(status)),
    }
}

pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, Failed> {
    // SAFETY: the out-pointers are valid for the duration of the call.
    let config =
        returned_bytes(|data, len| unsafe { proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, data, len) })?;
    Ok(config.unwrap_or_default())
}

/// All request headers, serialized as the ABI defines (see `header_map`). There is a getter for
/// one header's value too, but the filter needs several and each read costs about the same.
pub fn request_header_pairs() -> Option<Vec<u8>> {
    // SAFETY: the out-pointers are valid for the duration of the call.
    returned_bytes(|data, len| unsafe { proxy_get_header_map_pairs(MAP_HTTP_REQUEST_HEADERS, data, len) })
        .ok()
        .flatten()
}

pub fn set_request_header(name: &str, value: &[u8]) -> Result<(), Failed> {
    // SAFETY: name and value are valid for the duration of the call; the host copies them.
    let status = unsafe {
        proxy_replace_header_map_value(
            MAP_HTTP_REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    checked(status)
}

pub fn remove_request_header(name: &str) -> Result<(), Failed> {
    // SAFETY: the name is valid for the duration of the call.
    checked(unsafe { proxy_remove_header_map_value(MAP_HTTP_REQUEST_HEADERS, name.as_ptr(), name.len()) })
}

/// A host property, its path given as parts joined by NUL bytes, e.g. `b"source\0address"`.
pub fn property(path: &[u8]) -> Option<Vec<u8>> {
    // SAFETY: the path and out-pointers are valid for the duration of the call.
    returned_bytes(|data, len| unsafe { proxy_get_property(path.as_ptr(), path.len(), data, len) })
        .ok()
        .flatten()
}

fn checked(status: u32) -> Result<(), Failed> {
    match status {
        STATUS_OK => Ok(()),
        status => Err(Failed(status)),
    }
}

/// Sends the `log` crate's records, and panic messages, to Envoy's log.
pub fn install_logger() {
    static LOGGER: HostLogger = HostLogger;
    // Fails only if a logger is already installed, which is then just as good.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    // With panic = "abort" the VM traps after the hook; the hook says why in Envoy's log first.
    std::panic::set_hook(Box::new(|panic| write_log(LOG_LEVEL_CRITICAL, &panic.to_string())));
}

struct HostLogger;

const LOG_LEVEL_CRITICAL: u32 = 5;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        // The ABI's levels: trace 0, debug 1, info 2, warn 3, error 4, critical 5.
        let level = match record.level() {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        write_log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

fn write_log(level: u32, message: &str) {
    // SAFETY: the message is valid for the duration of the call. A failed log has nowhere to go.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}
