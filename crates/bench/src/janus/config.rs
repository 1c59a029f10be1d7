//! The minimal Janus configuration set the benchmark writes: the core (`janus.jcfg`), the HTTP
//! transport and the VideoRoom plugin, nothing else.

use std::net::Ipv4Addr;
use std::path::Path;

/// What goes into the configuration files.
#[derive(Debug, Clone)]
pub struct JanusConfig {
    /// The address Janus binds its HTTP API to and gathers its (only) ICE candidate on.
    pub ip: Ipv4Addr,
    /// HTTP API port.
    pub http_port: u16,
    /// RTP/ICE port range (inclusive).
    pub rtp_ports: (u16, u16),
    /// Janus log level, 0 (nothing) to 7.
    pub debug_level: u8,
    /// ICE-lite (Janus answers checks only; the generator's peers are full ICE).
    pub ice_lite: bool,
    /// `event_loops` of the core: `None` keeps Janus' default (one thread per handle).
    pub event_loops: Option<u32>,
    /// Session timeout in seconds (the client sends keepalives).
    pub session_timeout: u32,
}

impl JanusConfig {
    /// `janus.jcfg`. Plugin and transport folders point at folders of the temp dir that hold a
    /// symlink to the VideoRoom plugin and the HTTP transport only, so nothing else can load.
    pub fn core(&self, dir: &Path) -> String {
        let d = dir.display();
        let event_loops = self
            .event_loops
            .map(|n| format!("\tevent_loops = {n}\n"))
            .unwrap_or_default();
        format!(
            r#"general: {{
	configs_folder = "{d}"
	plugins_folder = "{d}/plugins"
	transports_folder = "{d}/transports"
	events_folder = "{d}/empty"
	loggers_folder = "{d}/empty"
	debug_level = {debug}
	debug_timestamps = false
	debug_colors = false
	server_name = "sfumato-bench"
	interface = "{ip}"
	session_timeout = {timeout}
	reclaim_session_timeout = 0
	token_auth = false
	hide_dependencies = true
{event_loops}}}
certificates: {{
}}
media: {{
	ipv6 = false
	ipv6_linklocal = false
	rtp_port_range = "{lo}-{hi}"
}}
nat: {{
	nice_debug = false
	full_trickle = false
	ice_lite = {lite}
	ice_tcp = false
	ignore_mdns = true
	ice_enforce_list = "{ip}"
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
	broadcast = false
}}
"#,
            debug = self.debug_level.min(7),
            ip = self.ip,
            timeout = self.session_timeout,
            lo = self.rtp_ports.0,
            hi = self.rtp_ports.1,
            lite = self.ice_lite,
        )
    }

    /// `janus.transport.http.jcfg`: plain HTTP on `ip:http_port` only, no admin API, no HTTPS.
    pub fn http(&self) -> String {
        format!(
            r#"general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	ip = "{ip}"
	port = {port}
	https = false
}}
admin: {{
	admin_base_path = "/admin"
	admin_http = false
	admin_https = false
}}
cors: {{
}}
"#,
            ip = self.ip,
            port = self.http_port,
        )
    }

    /// `janus.plugin.videoroom.jcfg`: no preset rooms (the benchmark creates its rooms through
    /// the API, see [`crate::janus::RoomOptions`]).
    pub fn videoroom(&self) -> String {
        "general: {\n\tstring_ids = false\n}\n".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JanusConfig {
        JanusConfig {
            ip: Ipv4Addr::new(10, 99, 0, 1),
            http_port: 8088,
            rtp_ports: (40000, 40999),
            debug_level: 9,
            ice_lite: true,
            event_loops: Some(2),
            session_timeout: 60,
        }
    }

    #[test]
    fn core_config_has_the_chosen_address_and_no_stun() {
        let text = cfg().core(Path::new("/tmp/x"));
        assert!(text.contains("ice_enforce_list = \"10.99.0.1\""));
        assert!(text.contains("rtp_port_range = \"40000-40999\""));
        assert!(text.contains("plugins_folder = \"/tmp/x/plugins\""));
        assert!(text.contains("debug_level = 7"));
        assert!(text.contains("event_loops = 2"));
        assert!(!text.contains("stun_server"));
        assert!(!text.contains("turn_server"));
        // Balanced braces (libconfig would refuse the file otherwise).
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn http_config_binds_one_address() {
        let text = cfg().http();
        assert!(text.contains("ip = \"10.99.0.1\""));
        assert!(text.contains("admin_http = false"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }
}
