//! ICE settings applied to every webrtcbin, and 1:1 NAT candidate rewriting.

use crate::config::IceSettings;
use gst::prelude::*;
use gst_webrtc::prelude::*;
use std::net::IpAddr;

/// Applies bundle policy, STUN/TURN, port range and local addresses to `webrtcbin`.
pub fn configure(webrtcbin: &gst::Element, ice: &IceSettings) {
    webrtcbin.set_property_from_str("bundle-policy", "max-bundle");
    // webrtcbin has no STUN server by default; keep it that way unless asked.
    if let Some(stun) = &ice.stun_server {
        webrtcbin.set_property("stun-server", stun);
    }
    for turn in &ice.turn_servers {
        if !webrtcbin.emit_by_name::<bool>("add-turn-server", &[turn]) {
            tracing::warn!("webrtcbin refused a TURN server URL");
        }
    }
    let agent = webrtcbin.property::<gst_webrtc::WebRTCICE>("ice-agent");
    // UDP only: ICE-TCP candidates would ignore the RTP port range and
    // double the checks; relaying over TCP is TURN's job.
    if agent.has_property("ice-tcp") {
        agent.set_property("ice-tcp", false);
    }
    // libnice asks the router for a port over UPnP by default: an SSDP
    // search and an HTTP listener per agent, useless for a server (and it
    // logged "Address already in use" under load). Public addresses come
    // from `public_ip`, STUN or TURN instead.
    if agent.has_property("agent") {
        let nice = agent.property::<gst::glib::Object>("agent");
        if nice.has_property("upnp") {
            nice.set_property("upnp", false);
        }
    }
    if let Some((low, high)) = ice.port_range {
        agent.set_min_rtp_port(u32::from(low));
        agent.set_max_rtp_port(u32::from(high));
    }
    // libnice skips loopback when it enumerates interfaces itself; an explicit
    // list also restricts gathering to exactly these addresses.
    for ip in &ice.local_ips {
        if !agent.emit_add_local_ip_address(&ip.to_string()) {
            tracing::warn!(%ip, "ICE agent refused local address");
        }
    }
}

/// Replaces the address of a host candidate with the 1:1 NAT address.
/// Other candidate types (srflx, relay) already carry public addresses.
pub fn rewrite_candidate(candidate: &str, public_ip: Option<IpAddr>) -> String {
    let Some(public) = public_ip else {
        return candidate.to_owned();
    };
    let mut fields: Vec<&str> = candidate.split(' ').collect();
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    let is_host = fields.windows(2).any(|w| w[0] == "typ" && w[1] == "host");
    if fields.len() < 8 || !is_host {
        return candidate.to_owned();
    }
    let public = public.to_string();
    fields[4] = &public;
    fields.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_candidates_get_the_public_address() {
        let c = "candidate:1 1 UDP 2015363327 10.0.0.5 40001 typ host";
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            rewrite_candidate(c, Some(ip)),
            "candidate:1 1 UDP 2015363327 203.0.113.7 40001 typ host"
        );
        assert_eq!(rewrite_candidate(c, None), c);
        let srflx = "candidate:2 1 UDP 1 198.51.100.1 5000 typ srflx raddr 10.0.0.5 rport 40001";
        assert_eq!(rewrite_candidate(srflx, Some(ip)), srflx);
        assert_eq!(rewrite_candidate("garbage", Some(ip)), "garbage");
    }
}
