//! Which route table of the ingress gateway serves a host, as Istio builds them from Gateways and
//! VirtualServices, and so whether authority mode can work: a request the filter rewrites to a
//! release host is routed again in the route table it started in, the public host's.
//!
//! Istio gives every plain-HTTP server on a port one shared route table (`http.<port>`), and each
//! TLS-terminating HTTPS server a table of its own (`https.<port>.<port name>.<gateway>.<namespace>`,
//! `gatewayRDSRouteName` in pilot/pkg/model/gateway.go). A table holds the hosts of the
//! VirtualServices bound to its servers' Gateways that those servers admit.

use std::collections::{BTreeMap, BTreeSet};

use canary_split::authority::{normalized_host, MAX_HOST_LEN};
use canary_split::config::Config;
use serde_json::Value;

/// The Gateways and VirtualServices given to `check`.
#[derive(Default)]
pub struct Routing {
    gateways: Vec<Gateway>,
    virtual_services: Vec<VirtualService>,
}

pub(crate) struct Gateway {
    /// `namespace/name`, as VirtualServices name it.
    pub(crate) name: String,
    pub(crate) namespace: String,
    /// The labels of the workloads that serve the Gateway (for a Gateway API listener, those of
    /// the pods Istio deploys for its Gateway).
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) servers: Vec<Server>,
    /// For a Gateway API listener, the `namespace/name` of its Gateway, as WasmPlugin targetRefs
    /// name it (see gateway_api.rs).
    pub(crate) parent: Option<String>,
}

pub(crate) struct Server {
    /// The route table Istio gives the server; `None` for servers without HTTP routes (TCP, TLS
    /// passthrough).
    pub(crate) table: Option<String>,
    /// `[namespace/]host` entries, the host possibly `*` or `*.suffix`.
    pub(crate) hosts: Vec<String>,
    /// The server as the user wrote it, for messages.
    pub(crate) label: String,
}

pub(crate) struct VirtualService {
    pub(crate) namespace: String,
    pub(crate) gateways: Vec<String>,
    pub(crate) hosts: Vec<String>,
}

/// What the check found for one route of a filter config.
pub struct Finding {
    pub route: usize,
    pub problem: bool,
    pub message: String,
}

fn text<'v>(value: &'v Value, pointer: &str, what: &str) -> Result<&'v str, String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}: {pointer} is missing or not a string"))
}

fn texts(value: &Value, pointer: &str, what: &str) -> Result<Vec<String>, String> {
    let Some(items) = value.pointer(pointer) else {
        return Ok(Vec::new());
    };
    items
        .as_array()
        .and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| format!("{what}: {pointer} is not a list of strings"))
}

fn labels(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn namespace_of(document: &Value) -> String {
    document
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned()
}

/// The route table of a server, named as Istio names it.
fn route_table(server: &Value, gateway: &str, namespace: &str, what: &str) -> Result<Option<String>, String> {
    let number = server
        .pointer("/port/number")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{what}: port.number is missing or not a number"))?;
    let protocol = text(server, "/port/protocol", what)?.to_ascii_uppercase();
    let bind = match server.get("bind").and_then(Value::as_str) {
        Some(bind) => format!(".{bind}"),
        None => String::new(),
    };
    let passthrough = server.pointer("/tls/mode").and_then(Value::as_str) == Some("PASSTHROUGH");
    Ok(match protocol.as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Some(format!("http.{number}{bind}")),
        "HTTPS" if !passthrough => {
            let port_name = text(server, "/port/name", what)?;
            let name = gateway.rsplit('/').next().unwrap_or(gateway);
            Some(format!("https.{number}.{port_name}.{name}.{namespace}{bind}"))
        }
        _ => None,
    })
}

/// Whether a host pattern (`host`, `*` or `*.suffix`) matches a host, case-insensitively.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => host.ends_with(suffix),
        _ => pattern == host,
    }
}

impl Routing {
    pub fn add_gateway(&mut self, document: &Value, label: &str) -> Result<(), String> {
        let namespace = namespace_of(document);
        let name = format!("{namespace}/{}", text(document, "/metadata/name", label)?);
        let what = format!("{label}: Gateway {name}");
        let servers = document
            .pointer("/spec/servers")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{what}: spec.servers is missing or not a list"))?;
        let mut parsed = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            let what = format!("{what}: spec.servers[{index}]");
            parsed.push(Server {
                table: route_table(server, &name, &namespace, &what)?,
                hosts: texts(server, "/hosts", &what)?,
                label: format!("{name} servers[{index}]"),
            });
        }
        self.gateways.push(Gateway {
            selector: labels(document.pointer("/spec/selector")),
            name,
            namespace,
            servers: parsed,
            parent: None,
        });
        Ok(())
    }

    /// Adds a Gateway or VirtualService as Istio makes them of Gateway API documents.
    pub(crate) fn add_converted(&mut self, gateways: Vec<Gateway>, virtual_services: Vec<VirtualService>) {
        self.gateways.extend(gateways);
        self.virtual_services.extend(virtual_services);
    }

    pub fn add_virtual_service(&mut self, document: &Value, label: &str) -> Result<(), String> {
        let namespace = namespace_of(document);
        let what = format!(
            "{label}: VirtualService {namespace}/{}",
            text(document, "/metadata/name", label)?
        );
        let gateways = texts(document, "/spec/gateways", &what)?
            .into_iter()
            .map(|g| if g.contains('/') { g } else { format!("{namespace}/{g}") })
            .collect();
        self.virtual_services.push(VirtualService {
            hosts: texts(document, "/spec/hosts", &what)?,
            gateways,
            namespace,
        });
        Ok(())
    }

    pub fn has_gateways(&self) -> bool {
        !self.gateways.is_empty()
    }

    /// Whether `server` of `gateway` puts `host` in its route table: a VirtualService bound to the
    /// Gateway routes the host, and the server admits it for that VirtualService's namespace.
    fn serves(&self, gateway: &Gateway, server: &Server, host: &str) -> bool {
        self.virtual_services.iter().any(|vs| {
            vs.gateways.contains(&gateway.name)
                && vs.hosts.iter().any(|pattern| host_matches(pattern, host))
                && server.hosts.iter().any(|entry| {
                    let (namespace, pattern) = entry.rsplit_once('/').unwrap_or(("*", entry));
                    let namespace = if namespace == "." {
                        gateway.namespace.as_str()
                    } else {
                        namespace
                    };
                    (namespace == "*" || namespace == vs.namespace) && host_matches(pattern, host)
                })
        })
    }

    /// The route tables of the Gateways a plugin runs on, each with the servers in it and the
    /// `hosts` it serves. A plugin with targetRefs runs only on the Gateway API Gateways they name;
    /// one without, on the Gateways whose workloads carry every label of its selector, or all of
    /// them without one (ShouldAttachPolicy in pilot/pkg/model/policyattachment.go).
    fn tables(&self, attached: &Attachment, hosts: &[&str]) -> BTreeMap<String, Table> {
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        let selected = self.gateways.iter().filter(|gateway| match attached {
            Attachment::TargetRefs(targets) => gateway.parent.as_ref().is_some_and(|parent| targets.contains(parent)),
            Attachment::Selector(selector) => selector
                .as_ref()
                .is_none_or(|labels| labels.iter().all(|(k, v)| gateway.selector.get(k) == Some(v))),
        });
        for gateway in selected {
            for server in &gateway.servers {
                let Some(name) = &server.table else { continue };
                let table = tables.entry(name.clone()).or_default();
                table.servers.push(server.label.clone());
                table.listeners |= gateway.parent.is_some();
                for host in hosts {
                    if self.serves(gateway, server, host) {
                        table.hosts.insert((*host).to_owned());
                    }
                }
            }
        }
        tables
    }

    /// For each route of `config` in authority mode, whether every route table that serves its
    /// public host also serves its release hosts.
    pub fn check_authority_mode(&self, config: &Config, attached: &Attachment) -> Vec<Finding> {
        let mut findings = Vec::new();
        for (index, route) in config.routes.iter().enumerate() {
            let releases: Vec<String> = [&route.primary.host, &route.canary.host]
                .into_iter()
                .flatten()
                .map(|host| {
                    let mut buffer = [0; MAX_HOST_LEN];
                    let host = normalized_host(host.as_bytes(), &mut buffer).unwrap_or_default();
                    String::from_utf8_lossy(host).into_owned()
                })
                .collect();
            if releases.is_empty() {
                continue; // header mode: the public host's own routes decide
            }
            let mut hosts: Vec<&str> = releases.iter().map(String::as_str).collect();
            hosts.push(&route.host);
            let tables = self.tables(attached, &hosts);
            let serving: Vec<(&String, &Table)> = tables
                .iter()
                .filter(|(_, table)| table.hosts.contains(&route.host))
                .collect();
            if serving.is_empty() {
                findings.push(Finding {
                    route: index,
                    problem: true,
                    message: format!(
                        "authority mode: none of the Gateways given serves {}: no VirtualService bound to them routes it on a server that admits it (give the VirtualServices too)",
                        route.host
                    ),
                });
                continue;
            }
            let mut problem = false;
            for (name, table) in &serving {
                let missing: Vec<&str> = releases
                    .iter()
                    .filter(|host| !table.hosts.contains(*host))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    problem = true;
                    findings.push(Finding {
                        route: index,
                        problem: true,
                        message: format!(
                            "authority mode cannot work behind {}: it serves {} but not {}, so every request the filter rewrites there ends in 404. {}, or use header mode (no \"host\" in primary and canary; the public host's routes match {})",
                            table.place(name),
                            route.host,
                            missing.join(" and "),
                            table.advice(),
                            config.decision_header
                        ),
                    });
                }
            }
            if !problem {
                let names: Vec<String> = serving
                    .iter()
                    .map(|(name, table)| {
                        if table.listeners {
                            table.servers.join(", ")
                        } else {
                            (*name).clone()
                        }
                    })
                    .collect();
                findings.push(Finding {
                    route: index,
                    problem: false,
                    message: format!(
                        "authority mode: every route table that serves {} serves its release hosts too ({})",
                        route.host,
                        names.join(", ")
                    ),
                });
            }
        }
        findings
    }
}

/// The gateways a WasmPlugin runs on: those its targetRefs name (`namespace/name` of Gateway API
/// Gateways), or those its selector selects (all without one).
pub enum Attachment {
    TargetRefs(Vec<String>),
    Selector(Option<BTreeMap<String, String>>),
}

#[derive(Default)]
struct Table {
    servers: Vec<String>,
    hosts: BTreeSet<String>,
    /// Whether its servers are Gateway API listeners, which users know by name rather than by
    /// route table.
    listeners: bool,
}

impl Table {
    fn place(&self, name: &str) -> String {
        if self.listeners {
            self.servers.join(", ")
        } else {
            format!("route table {name} ({})", self.servers.join(", "))
        }
    }

    fn advice(&self) -> &'static str {
        if self.listeners {
            "Istio gives each HTTPS listener its own route table: serve the public host and its release hosts from one listener (a wildcard hostname such as *.example.com, with one certificate for all of them)"
        } else {
            "Istio gives each HTTPS server its own route table: serve the public host and its release hosts from one Gateway server (one certificate for all of them)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(yaml: &str) -> Value {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn route_tables_are_named_as_istio_names_them() {
        let table = |yaml| route_table(&server(yaml), "models/gw", "models", "test").unwrap();
        assert_eq!(
            table("port: {number: 80, name: web, protocol: HTTP}"),
            Some("http.80".into())
        );
        assert_eq!(
            table("port: {number: 8080, name: web, protocol: http}\nbind: 10.0.0.1"),
            Some("http.8080.10.0.0.1".into())
        );
        assert_eq!(
            table("port: {number: 443, name: https-a, protocol: HTTPS}\ntls: {mode: SIMPLE}"),
            Some("https.443.https-a.gw.models".into())
        );
        assert_eq!(
            table("port: {number: 443, name: tls, protocol: HTTPS}\ntls: {mode: PASSTHROUGH}"),
            None
        );
        assert_eq!(table("port: {number: 9000, name: tcp, protocol: TCP}"), None);
        assert!(
            route_table(&server("port: {number: 80}"), "models/gw", "models", "test")
                .unwrap_err()
                .contains("/port/protocol is missing")
        );
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches("Shop.example.com", "shop.example.com"));
        assert!(host_matches("*", "shop.example.com"));
        assert!(host_matches("*.example.com", "shop.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*example.com", "shopexample.com"));
        assert!(!host_matches("shop.example.com", "shop.example.org"));
    }
}
