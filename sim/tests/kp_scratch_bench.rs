use std::time::Instant;
use std::net::Ipv4Addr;
use sim::protocol::Protocol;
use sim::render::proxy_iptables::*;
#[test]
fn scratch() {
    let services: Vec<ServicePort> = (0..10_000).map(|k| {
        let mut sp = ServicePort::cluster_ip(&format!("ns{}", k % 17), &format!("svc-{k}"), Some("http"), Protocol::Tcp, Ipv4Addr::from(0x0a60_0000u32 + k as u32), 80);
        if k % 3 == 0 { sp.node_port = Some(30000 + (k % 2768) as u16); }
        sp.endpoints = (0..3).map(|e| Endpoint::ready(Ipv4Addr::from(0x0af4_0000u32 + (k*4+e) as u32), 8080, Some(if e%2==0 {"n1"} else {"n2"}))).collect();
        sp }).collect();
    let input = ProxyInput { node: "n1".into(), node_ip: "192.168.0.11".parse().unwrap(), cluster_cidr: Some("10.244.0.0/16".parse().unwrap()), config: ProxyConfig::default(), services };
    if std::env::var("ONLY_RENDER").is_ok() { let t = Instant::now(); for _ in 0..20 { let r = render(&input).unwrap(); std::hint::black_box(&r); } eprintln!("20 renders {:?}", t.elapsed()); return; }
    for _ in 0..3 {
        let t = Instant::now(); let r = render(&input).unwrap(); let a = t.elapsed();
        let t = Instant::now(); let s = r.full_restore(); let b = t.elapsed();
        let t = Instant::now(); let mut n = 0; for k in 0..40_000 { n += sim::render::proxy_names::endpoint_chain("ns1/svc-1234:http", Protocol::Tcp, &format!("10.0.{}.{}:80", k/256, k%256)).len(); } let c = t.elapsed();
        let t = Instant::now(); drop(r); drop(s); let d = t.elapsed();
        eprintln!("render {a:?} assemble {b:?} 40k hashes {c:?} drop {d:?} {n}");
    }
}
