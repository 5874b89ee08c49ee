//! What Istio builds on the ingress gateway from Gateways, VirtualServices and the WasmPlugin, as
//! far as `check` needs it: which route table serves a host, which listeners the plugin runs on,
//! which servers redirect plain HTTP, and which routes match the decision header.
//!
//! The rules, each from Istio's source (release-1.29; `tests/e2e/ISTIO.md` lists them all, and
//! `tests/e2e/istio_routes.py` renders the same ones into Envoy route tables):
//! - a server's port resolves to the Service's target port (`resolvePorts` in
//!   pilot/pkg/model/gateway.go): 8443 for 443 and 8080 for 80 on istioctl's
//!   `istio-ingressgateway`, the port itself on the `istio/gateway` Helm chart;
//! - plain-HTTP servers (HTTP, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY, compared case-insensitively,
//!   pkg/config/protocol/instance.go) on a resolved port share one route table
//!   `http.<resolved port>`; each TLS-terminating HTTPS server has its own,
//!   `https.<port>.<port name>.<gateway>.<namespace>` (`gatewayRDSRouteName`); PASSTHROUGH and
//!   AUTO_PASSTHROUGH servers have none;
//! - a TLS server naming a host that an earlier TLS server on the same resolved port and bind
//!   already named is dropped (`CheckDuplicates`, `mergeGateways`);
//! - a WasmPlugin runs on every listener its `match` selects; on a gateway a listener is of mode
//!   CLIENT and its port is the resolved one (`matchTrafficSelectors`,
//!   `workloadModeForListenerClass` in pilot/pkg/model/extensions.go);
//! - a VirtualService host without a dot is a Service in its namespace, in the cluster's domain
//!   (`ResolveShortnameToFQDN` in pilot/pkg/model/config.go).

use std::collections::{BTreeMap, BTreeSet};

use canary_split::authority::{normalized_host, MAX_HOST_LEN};
use canary_split::config::{Config, Variant};
use serde_json::Value;

/// Where istioctl's `istio-ingressgateway` Service sends its ports (its Deployment listens on
/// unprivileged ports); any other port, and every port on the `istio/gateway` Helm chart, is
/// listened on as it is.
const ISTIOCTL_TARGET_PORTS: &[(u32, u32)] = &[(80, 8080), (443, 8443)];

/// The cluster's DNS domain, which Istio appends to short names (istiod's `--domain`).
const CLUSTER_DOMAIN: &str = "cluster.local";

/// A VirtualService host as Istio reads it: a name without a dot is `<name>.<namespace>.svc.<domain>`;
/// `*`, IP addresses and names with a dot stay as they are.
fn resolve_short_name(host: &str, namespace: &str, domain: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_owned();
    }
    format!("{host}.{namespace}.svc.{domain}")
}

/// The port a Gateway server's port resolves to on istioctl's `istio-ingressgateway`.
fn istioctl_target_port(port: u32) -> u32 {
    ISTIOCTL_TARGET_PORTS
        .iter()
        .find(|(service, _)| *service == port)
        .map_or(port, |(_, target)| *target)
}

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
    /// The Gateway's port number.
    pub(crate) port: u32,
    pub(crate) bind: String,
    /// The route table Istio gives the server; `None` for servers without HTTP routes (TCP, TLS
    /// passthrough).
    pub(crate) table: Option<String>,
    /// Whether it has TLS settings: those servers' hosts must be unique per port.
    pub(crate) tls: bool,
    /// `tls.httpsRedirect`: every request gets a 301 to `https://` + its `:authority`.
    pub(crate) redirects: bool,
    /// `[namespace/]host` entries, the host possibly `*` or `*.suffix`.
    pub(crate) hosts: Vec<String>,
    /// The server as the user wrote it, for messages.
    pub(crate) label: String,
    /// Whether it is listened on at its own port whatever the install: a Gateway API listener
    /// (the Service Istio deploys for a Gateway keeps each port).
    pub(crate) listened_on_own_port: bool,
}

impl Server {
    fn listened_as(&self) -> String {
        if self.listened_on_own_port {
            format!("port {}, listened on as it is", self.port)
        } else {
            format!(
                "port {}, listened on as {} by istioctl's istio-ingressgateway and as {} by the istio/gateway chart",
                self.port,
                istioctl_target_port(self.port),
                self.port
            )
        }
    }
}

pub(crate) struct VirtualService {
    /// `VirtualService`, or `HTTPRoute` for those Istio makes of one (named after it), for messages.
    pub(crate) kind: &'static str,
    /// `namespace/name`.
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) gateways: Vec<String>,
    pub(crate) hosts: Vec<String>,
    /// Every header match of its http routes: lower-cased name, and the exact value if it is one.
    pub(crate) header_matches: Vec<(String, Option<String>)>,
}

/// The listeners a WasmPlugin's `match` selects on a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ListenerMatch {
    /// No `match`, or an entry without ports: every listener, port 80 included.
    #[default]
    Every,
    /// Only listeners on these (resolved) ports.
    Ports(BTreeSet<u32>),
    /// Only entries of mode SERVER: a gateway's listeners are CLIENT, so none.
    None,
}

impl ListenerMatch {
    /// The WasmPlugin's `spec.match`, as Istio applies it to a gateway's listeners: an entry of
    /// mode SERVER selects none, one without ports every listener, and a port selector without
    /// a number none (`matchPorts` compares only non-zero numbers).
    pub fn of_wasm_plugin(document: &Value) -> ListenerMatch {
        let entries = match document.pointer("/spec/match").and_then(Value::as_array) {
            Some(entries) if !entries.is_empty() => entries,
            _ => return ListenerMatch::Every,
        };
        let mut ports = BTreeSet::new();
        for entry in entries {
            if entry.get("mode").and_then(Value::as_str) == Some("SERVER") {
                continue;
            }
            let Some(selectors) = entry.get("ports").and_then(Value::as_array).filter(|p| !p.is_empty()) else {
                return ListenerMatch::Every;
            };
            let numbers = selectors
                .iter()
                .filter_map(|selector| selector.get("number").and_then(Value::as_u64))
                .filter_map(|number| u32::try_from(number).ok())
                .filter(|&number| number != 0);
            ports.extend(numbers);
        }
        if ports.is_empty() {
            ListenerMatch::None
        } else {
            ListenerMatch::Ports(ports)
        }
    }

    /// Whether the plugin runs on the listener of a given (resolved) port.
    fn runs_on(&self, listener_port: u32) -> bool {
        match self {
            ListenerMatch::Every => true,
            ListenerMatch::Ports(ports) => ports.contains(&listener_port),
            ListenerMatch::None => false,
        }
    }

    /// Whether the plugin runs on a server's listener on istioctl's gateway or the Helm chart's,
    /// whichever resolution of its port the match names.
    fn may_run_on(&self, port: u32) -> bool {
        self.runs_on(port) || self.runs_on(istioctl_target_port(port))
    }

    /// Whether the plugin runs on a server's listener: a Gateway API listener is listened on at
    /// its own port, another server on whichever port its install resolves it to.
    fn runs_on_server(&self, server: &Server) -> bool {
        if server.listened_on_own_port {
            self.runs_on(server.port)
        } else {
            self.may_run_on(server.port)
        }
    }

    fn describe(&self) -> String {
        match self {
            ListenerMatch::Every => "no port match".to_owned(),
            ListenerMatch::Ports(ports) => {
                let ports: Vec<String> = ports.iter().map(u32::to_string).collect();
                format!("a match on ports {}", ports.join(", "))
            }
            ListenerMatch::None => {
                "a match that selects no gateway listener (mode SERVER, or no port number; a gateway's listeners are CLIENT)"
                    .to_owned()
            }
        }
    }
}

/// What the check found for one route of a filter config.
pub struct Finding {
    pub route: usize,
    pub problem: bool,
    pub message: String,
}

impl Finding {
    fn problem(route: usize, message: String) -> Finding {
        Finding {
            route,
            problem: true,
            message,
        }
    }

    fn warning(route: usize, message: String) -> Finding {
        Finding {
            route,
            problem: false,
            message: format!("warning: {message}"),
        }
    }
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

/// Whether Istio routes a server's protocol over HTTP (`protocol.Parse(...).IsHTTP()`).
fn is_http_protocol(protocol: &str) -> bool {
    ["HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"]
        .iter()
        .any(|http| protocol.eq_ignore_ascii_case(http))
}

/// The route table of a server on its resolved port, named as Istio names it
/// (`gatewayRDSRouteName`): plain HTTP after the resolved port, HTTPS after the Gateway's own.
fn route_table(server: &Value, resolved_port: u32, gateway: &str, what: &str) -> Result<Option<String>, String> {
    let number = server_port(server, what)?;
    let protocol = text(server, "/port/protocol", what)?;
    let bind = match server.get("bind").and_then(Value::as_str) {
        Some(bind) => format!(".{bind}"),
        None => String::new(),
    };
    let tls_mode = server.pointer("/tls/mode").and_then(Value::as_str).unwrap_or("");
    let passthrough = tls_mode.eq_ignore_ascii_case("PASSTHROUGH") || tls_mode.eq_ignore_ascii_case("AUTO_PASSTHROUGH");
    if is_http_protocol(protocol) {
        return Ok(Some(format!("http.{resolved_port}{bind}")));
    }
    if protocol.eq_ignore_ascii_case("HTTPS") && !passthrough {
        let port_name = text(server, "/port/name", what)?;
        let (namespace, name) = gateway.split_once('/').unwrap_or(("default", gateway));
        return Ok(Some(format!("https.{number}.{port_name}.{name}.{namespace}{bind}")));
    }
    Ok(None)
}

fn server_port(server: &Value, what: &str) -> Result<u32, String> {
    server
        .pointer("/port/number")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{what}: port.number is missing or not a port number"))
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

/// The header matches of a VirtualService's http routes.
fn header_matches(document: &Value) -> Vec<(String, Option<String>)> {
    let routes = document.pointer("/spec/http").and_then(Value::as_array);
    routes
        .into_iter()
        .flatten()
        .filter_map(|route| route.get("match").and_then(Value::as_array))
        .flatten()
        .filter_map(|condition| condition.get("headers").and_then(Value::as_object))
        .flatten()
        .map(|(name, string_match)| {
            let exact = string_match.get("exact").and_then(Value::as_str).map(str::to_owned);
            (name.to_ascii_lowercase(), exact)
        })
        .collect()
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
            let port = server_port(server, &what)?;
            parsed.push(Server {
                port,
                bind: server.get("bind").and_then(Value::as_str).unwrap_or("").to_owned(),
                table: route_table(server, istioctl_target_port(port), &name, &what)?,
                tls: server.get("tls").is_some(),
                redirects: server.pointer("/tls/httpsRedirect").and_then(Value::as_bool) == Some(true),
                hosts: texts(server, "/hosts", &what)?,
                label: format!("{name} servers[{index}]"),
                listened_on_own_port: false,
            });
        }
        // A later document of the same name replaces an earlier one, as `kubectl apply` would.
        self.gateways.retain(|gateway| gateway.name != name);
        self.gateways.push(Gateway {
            selector: labels(document.pointer("/spec/selector")),
            name,
            namespace,
            servers: parsed,
            parent: None,
        });
        Ok(())
    }

    /// Adds the Istio Gateways and VirtualServices that Istio makes of Gateway API documents.
    pub(crate) fn add_converted(&mut self, gateways: Vec<Gateway>, virtual_services: Vec<VirtualService>) {
        self.gateways.extend(gateways);
        self.virtual_services.extend(virtual_services);
    }

    pub fn add_virtual_service(&mut self, document: &Value, label: &str) -> Result<(), String> {
        let namespace = namespace_of(document);
        let name = format!("{namespace}/{}", text(document, "/metadata/name", label)?);
        let what = format!("{label}: VirtualService {name}");
        let gateways = texts(document, "/spec/gateways", &what)?
            .into_iter()
            .map(|g| if g.contains('/') { g } else { format!("{namespace}/{g}") })
            .collect();
        self.virtual_services.retain(|vs| vs.name != name);
        self.virtual_services.push(VirtualService {
            kind: "VirtualService",
            hosts: texts(document, "/spec/hosts", &what)?
                .iter()
                .map(|host| resolve_short_name(host, &namespace, CLUSTER_DOMAIN))
                .collect(),
            header_matches: header_matches(document),
            gateways,
            namespace,
            name,
        });
        Ok(())
    }

    pub fn has_gateways(&self) -> bool {
        !self.gateways.is_empty()
    }

    /// Whether a server's `hosts` admit `host` for a VirtualService in `namespace`.
    fn admits(gateway: &Gateway, server: &Server, namespace: &str, host: &str) -> bool {
        server.hosts.iter().any(|entry| {
            let (entry_namespace, pattern) = entry.rsplit_once('/').unwrap_or(("*", entry));
            let entry_namespace = if entry_namespace == "." {
                gateway.namespace.as_str()
            } else {
                entry_namespace
            };
            (entry_namespace == "*" || entry_namespace == namespace) && host_matches(pattern, host)
        })
    }

    /// The VirtualServices that route `host` through `server` of `gateway`: bound to the Gateway,
    /// and admitted by the server for their namespace.
    fn routes_through<'r>(
        &'r self,
        gateway: &'r Gateway,
        server: &'r Server,
        host: &'r str,
    ) -> impl Iterator<Item = &'r VirtualService> {
        self.virtual_services.iter().filter(move |vs| {
            vs.gateways.contains(&gateway.name)
                && vs.hosts.iter().any(|pattern| host_matches(pattern, host))
                && Self::admits(gateway, server, &vs.namespace, host)
        })
    }

    /// The servers of the Gateways a plugin runs on, without the TLS servers Istio drops for
    /// naming a host another TLS server on their port already has. A plugin with targetRefs runs
    /// only on the Gateway API Gateways they name; one without, on the Gateways whose workloads
    /// carry every label of its selector, or all of them without one (ShouldAttachPolicy in
    /// pilot/pkg/model/policyattachment.go).
    fn servers(&self, attached: &Attachment) -> Vec<(&Gateway, usize, &Server)> {
        let mut tls_hosts: BTreeMap<u32, BTreeMap<&str, &str>> = BTreeMap::new();
        let mut kept = Vec::new();
        let selected = self.gateways.iter().filter(|gateway| match attached {
            Attachment::TargetRefs(targets) => gateway.parent.as_ref().is_some_and(|parent| targets.contains(parent)),
            Attachment::Selector(selector) => selector
                .as_ref()
                .is_none_or(|labels| labels.iter().all(|(k, v)| gateway.selector.get(k) == Some(v))),
        });
        for gateway in selected {
            for (index, server) in gateway.servers.iter().enumerate() {
                if server.tls {
                    let known = tls_hosts.entry(istioctl_target_port(server.port)).or_default();
                    let duplicate = server
                        .hosts
                        .iter()
                        .any(|host| known.get(host.as_str()) == Some(&server.bind.as_str()));
                    if duplicate {
                        continue;
                    }
                    for host in &server.hosts {
                        known.insert(host, &server.bind);
                    }
                }
                kept.push((gateway, index, server));
            }
        }
        kept
    }

    /// The route tables of those servers, each with its servers and the `hosts` it serves.
    fn tables(&self, servers: &[(&Gateway, usize, &Server)], hosts: &[&str]) -> BTreeMap<String, Table> {
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        for (gateway, _, server) in servers {
            let Some(name) = &server.table else { continue };
            let table = tables.entry(name.clone()).or_default();
            table.servers.push(server.label.clone());
            table.listeners |= gateway.parent.is_some();
            for host in hosts {
                if self.routes_through(gateway, server, host).next().is_some() {
                    table.hosts.insert((*host).to_owned());
                }
            }
        }
        tables
    }

    /// For each route of `config`, what the gateway will do with it: in authority mode, whether
    /// every route table that serves its public host also serves its release hosts, and that no
    /// server the plugin runs on redirects the public host; in either mode, whether the plugin
    /// runs on every server that routes the public host, and whether a client can reach the
    /// canary through the decision header while the filter is bypassed.
    pub fn check_gateway_routing(
        &self,
        config: &Config,
        attached: &Attachment,
        listeners: &ListenerMatch,
    ) -> Vec<Finding> {
        let servers = self.servers(attached);
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
            let authority_mode = !releases.is_empty();
            findings.extend(self.unsplit_servers(index, &route.host, &servers, listeners));
            findings.extend(self.decision_header_routes(index, config, &route.host, authority_mode, &servers));
            if authority_mode {
                findings.extend(Self::redirects_to_releases(
                    index,
                    &route.host,
                    &releases,
                    &servers,
                    listeners,
                ));
                findings.extend(self.release_tables(index, config, &route.host, &releases, &servers));
            }
        }
        findings
    }

    /// Servers that route the public host to its VirtualServices, on a port the plugin's `match`
    /// leaves out: their requests are never split. A match that names the port only as one of the
    /// two usual installs listens on it leaves it out on the other.
    fn unsplit_servers(
        &self,
        index: usize,
        public: &str,
        servers: &[(&Gateway, usize, &Server)],
        listeners: &ListenerMatch,
    ) -> Vec<Finding> {
        let serving = servers.iter().filter(|(gateway, _, server)| {
            server.table.is_some() && !server.redirects && self.routes_through(gateway, server, public).next().is_some()
        });
        let mut findings = Vec::new();
        for (gateway, server_index, server) in serving {
            if !server.listened_on_own_port {
                let (chart, istioctl) = (server.port, istioctl_target_port(server.port));
                let (on_chart, on_istioctl) = (listeners.runs_on(chart), listeners.runs_on(istioctl));
                if on_chart != on_istioctl {
                    let (missing, install) = if on_chart {
                        (istioctl, "istioctl's istio-ingressgateway")
                    } else {
                        (chart, "the istio/gateway chart's gateway")
                    };
                    findings.push(Finding::warning(
                        index,
                        format!(
                            "the WasmPlugin has {}, which leaves out port {missing}: on {install}, which listens on {missing} for {} servers[{server_index}] (port {}), requests to {public} there are never split. Add {missing} to the match unless your gateway is installed otherwise",
                            listeners.describe(),
                            gateway.name,
                            server.port
                        ),
                    ));
                }
            }
            if listeners.runs_on_server(server) {
                continue;
            }
            findings.push(Finding::problem(
                index,
                format!(
                    "the WasmPlugin has {}, which leaves out {} ({}): requests to {public} there are never split. Istio compares the listener's port, the Service's target port",
                    listeners.describe(),
                    server.label,
                    server.listened_as()
                ),
            ));
        }
        findings
    }

    /// Servers the plugin runs on that redirect the public host to HTTPS: Envoy builds the
    /// redirect from the `:authority` the filter rewrote, so clients are sent to a release host.
    fn redirects_to_releases(
        index: usize,
        public: &str,
        releases: &[String],
        servers: &[(&Gateway, usize, &Server)],
        listeners: &ListenerMatch,
    ) -> Vec<Finding> {
        servers
            .iter()
            .filter(|(_, _, server)| {
                server.redirects
                    && listeners.runs_on_server(server)
                    && server.hosts.iter().any(|entry| {
                        let pattern = entry.rsplit_once('/').map_or(entry.as_str(), |(_, host)| host);
                        host_matches(pattern, public)
                    })
            })
            .map(|(gateway, server_index, server)| {
                Finding::problem(
                    index,
                    format!(
                        "authority mode on a server that redirects: the WasmPlugin ({}) runs on {} servers[{server_index}] (port {}), whose httpsRedirect builds its 301 from the :authority the filter rewrote, so plain-HTTP clients of {public} are redirected to https://{}/... and stay outside the split. Give the WasmPlugin a match on the HTTPS listener's port only: Istio compares the Service's target port, 8443 on istioctl's istio-ingressgateway and 443 on the istio/gateway chart (match: [{{ports: [{{number: 8443}}, {{number: 443}}]}}])",
                        listeners.describe(),
                        gateway.name,
                        server.port,
                        releases.join("/... or https://")
                    ),
                )
            })
            .collect()
    }

    /// VirtualServices of the public host that match the decision header. In authority mode the
    /// filter never sends a request there with the header set, so such a match serves only
    /// clients that set it themselves while the filter is bypassed. In header mode they must match
    /// the values the filter writes, and the canary's must be one a client cannot guess.
    fn decision_header_routes(
        &self,
        index: usize,
        config: &Config,
        public: &str,
        authority_mode: bool,
        servers: &[(&Gateway, usize, &Server)],
    ) -> Vec<Finding> {
        let header = &config.decision_header;
        let canary_value = &config.decision_values.canary;
        let mut seen = BTreeSet::new();
        let mut findings = Vec::new();
        let mut canary_routed = false;
        for (gateway, _, server) in servers {
            for vs in self.routes_through(gateway, server, public) {
                if !seen.insert(vs.name.as_str()) {
                    continue;
                }
                let values: Vec<&Option<String>> = vs
                    .header_matches
                    .iter()
                    .filter(|(name, _)| name == header)
                    .map(|(_, value)| value)
                    .collect();
                if values.is_empty() {
                    continue;
                }
                if authority_mode {
                    findings.push(Finding::warning(
                        index,
                        format!(
                            "{} {} routes {public} by the decision header {header}, which the filter in authority mode never leaves on a request to it: while the filter is bypassed (FAIL_OPEN: module not fetched, VM crashed), any client that sends the header takes that route. Remove the match",
                            vs.kind, vs.name
                        ),
                    ));
                    continue;
                }
                let written = [&config.decision_values.primary, canary_value];
                for value in values {
                    canary_routed |= value.as_ref() == Some(canary_value);
                    match value {
                        Some(value) if written.contains(&value) => {}
                        Some(value) => findings.push(Finding::problem(
                            index,
                            format!(
                                "{} {} matches {header}: {value}, a value the filter never writes (decision_values: primary {:?}, canary {:?})",
                                vs.kind, vs.name, config.decision_values.primary, config.decision_values.canary
                            ),
                        )),
                        None => findings.push(Finding::warning(
                            index,
                            format!(
                                "{} {} matches {header} other than exactly: a client may satisfy it while the filter is bypassed",
                                vs.kind, vs.name
                            ),
                        )),
                    }
                }
                if canary_value == Variant::Canary.as_str() {
                    findings.push(Finding::warning(
                        index,
                        format!(
                            "header mode with the default decision value \"canary\": while the filter is bypassed (FAIL_OPEN), any client that sends {header}: canary reaches the canary through {} {}. Set decision_values.canary to a value clients cannot guess, and match it there",
                            vs.kind, vs.name
                        ),
                    ));
                }
            }
        }
        if !authority_mode && !seen.is_empty() && !canary_routed {
            findings.push(Finding::problem(
                index,
                format!(
                    "header mode: no VirtualService of {public} matches {header}: {canary_value}, the value the filter writes for the canary, so the canary gets no request through {public} (match it exactly in a route to the canary)"
                ),
            ));
        }
        findings
    }

    /// Whether every route table that serves the public host also serves its release hosts.
    fn release_tables(
        &self,
        index: usize,
        config: &Config,
        public: &str,
        releases: &[String],
        servers: &[(&Gateway, usize, &Server)],
    ) -> Vec<Finding> {
        let mut hosts: Vec<&str> = releases.iter().map(String::as_str).collect();
        hosts.push(public);
        let tables = self.tables(servers, &hosts);
        let serving: Vec<(&String, &Table)> = tables
            .iter()
            .filter(|(_, table)| table.hosts.contains(public))
            .collect();
        if serving.is_empty() {
            return vec![Finding::problem(
                index,
                format!(
                    "authority mode: none of the Gateways given serves {public}: no VirtualService bound to them routes it on a server that admits it (give the VirtualServices too)"
                ),
            )];
        }
        let mut findings = Vec::new();
        for (name, table) in &serving {
            let missing: Vec<&str> = releases
                .iter()
                .filter(|host| !table.hosts.contains(*host))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                findings.push(Finding::problem(
                    index,
                    format!(
                        "authority mode cannot work behind {}: it serves {public} but not {}, so every request the filter rewrites there ends in 404. {}, or use header mode (no \"host\" in primary and canary; the public host's routes match {})",
                        table.place(name),
                        missing.join(" and "),
                        table.advice(),
                        config.decision_header
                    ),
                ));
            }
        }
        if findings.is_empty() {
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
                    "authority mode: every route table that serves {public} serves its release hosts too ({})",
                    names.join(", ")
                ),
            });
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

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn short_virtual_service_hosts_are_services_of_its_namespace() {
        assert_eq!(
            resolve_short_name("sklearn", "models", "example.internal"),
            "sklearn.models.svc.example.internal"
        );
        for kept in ["*", "sklearn.models", "models.example.com", "10.0.0.1", "::1", ""] {
            assert_eq!(resolve_short_name(kept, "models", CLUSTER_DOMAIN), kept);
        }
        let mut routing = Routing::default();
        let vs =
            "metadata: {name: sklearn, namespace: models}\nspec: {hosts: [sklearn, a.example.com], gateways: [gw]}";
        routing.add_virtual_service(&yaml(vs), "test").unwrap();
        assert_eq!(
            routing.virtual_services[0].hosts,
            ["sklearn.models.svc.cluster.local", "a.example.com"]
        );
    }

    #[test]
    fn route_tables_are_named_as_istio_names_them() {
        let table = |text, port| route_table(&yaml(text), port, "models/gw", "test").unwrap();
        assert_eq!(
            table("port: {number: 80, name: web, protocol: HTTP}", 8080),
            Some("http.8080".into())
        );
        assert_eq!(
            table("port: {number: 8080, name: web, protocol: http}\nbind: 10.0.0.1", 8080),
            Some("http.8080.10.0.0.1".into())
        );
        assert_eq!(
            table("port: {number: 80, name: proxy, protocol: HTTP_PROXY}", 80),
            Some("http.80".into())
        );
        assert_eq!(
            table(
                "port: {number: 443, name: https-a, protocol: HTTPS}\ntls: {mode: SIMPLE}",
                8443
            ),
            Some("https.443.https-a.gw.models".into())
        );
        assert_eq!(
            table(
                "port: {number: 443, name: https-a, protocol: https}\ntls: {mode: SIMPLE}",
                443
            ),
            Some("https.443.https-a.gw.models".into())
        );
        assert_eq!(
            table(
                "port: {number: 443, name: tls, protocol: HTTPS}\ntls: {mode: PASSTHROUGH}",
                8443
            ),
            None
        );
        assert_eq!(
            table(
                "port: {number: 443, name: tls, protocol: HTTPS}\ntls: {mode: AUTO_PASSTHROUGH}",
                8443
            ),
            None
        );
        assert_eq!(table("port: {number: 9000, name: tcp, protocol: TCP}", 9000), None);
        assert!(route_table(&yaml("port: {number: 80}"), 80, "models/gw", "test")
            .unwrap_err()
            .contains("/port/protocol is missing"));
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

    #[test]
    fn a_wasm_plugins_match_selects_listeners_by_resolved_port_and_never_by_mode_server() {
        let of = |text| ListenerMatch::of_wasm_plugin(&yaml(text));
        assert_eq!(of("spec: {}"), ListenerMatch::Every);
        assert_eq!(of("spec: {match: [{mode: CLIENT}]}"), ListenerMatch::Every);
        assert_eq!(
            of("spec: {match: [{mode: SERVER, ports: [{number: 443}]}]}"),
            ListenerMatch::None
        );
        let https = of("spec: {match: [{ports: [{number: 8443}]}, {mode: CLIENT_AND_SERVER, ports: [{number: 443}]}]}");
        assert_eq!(https, ListenerMatch::Ports([443, 8443].into()));
        assert!(https.may_run_on(443));
        assert!(!https.may_run_on(80));
        // On istioctl's gateway port 443 listens on 8443.
        assert!(of("spec: {match: [{ports: [{number: 8443}]}]}").may_run_on(443));
        assert!(of("spec: {match: [{ports: [{number: 8080}]}]}").may_run_on(80));
        assert_eq!(of("spec: {match: [{ports: [{number: 0}]}]}"), ListenerMatch::None);
    }

    #[test]
    fn a_tls_server_repeating_a_host_on_its_port_is_dropped() {
        let mut routing = Routing::default();
        let gateway = yaml(
            "metadata: {name: gw, namespace: models}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 443, name: a, protocol: HTTPS}, hosts: ['*/a.example.com'], tls: {mode: SIMPLE}}
  - {port: {number: 443, name: b, protocol: HTTPS}, hosts: ['*/a.example.com', '*/b.example.com'], tls: {mode: SIMPLE}}
  - {port: {number: 443, name: c, protocol: HTTPS}, hosts: ['*/c.example.com'], tls: {mode: SIMPLE}}",
        );
        routing.add_gateway(&gateway, "test").unwrap();
        let kept: Vec<usize> = routing
            .servers(&Attachment::Selector(None))
            .iter()
            .map(|(_, index, _)| *index)
            .collect();
        assert_eq!(kept, [0, 2]);
    }
}
