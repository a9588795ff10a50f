//! The egress proxy under load, side by side: direct, ours (tunnel; intercept + secret
//! swap), mitmproxy (passthrough; intercept; intercept + swap in an addon). One server, one
//! client configuration (trusting the test CA, our CA and mitmproxy's, so only the path
//! differs), the same connections and duration on every path.

use super::load::{self, Run};
use super::mitm::{self, Mitm};
use super::server::{self, Pki};
use super::usage::{PROXY_THREADS, SERVER_THREADS};
use super::{Options, Quantiles};
use anyhow::{Context, Result};
use bytebot_bottle::audit::EgressSummary;
use bytebot_bottle::ca::Ca;
use bytebot_bottle::policy::{Policy, ResolvedSecrets};
use bytebot_bottle::proxy::{EgressProxy, Listen, ProxyConfig};
use rand::Rng as _;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Every bench host ends in this; none of them is looked up in DNS.
pub(super) const HOST_SUFFIX: &str = ".bench.test";
/// No secret bound: our proxy tunnels it, mitmproxy passes it through (`ignore_hosts`).
pub(super) const TUNNEL_HOST: &str = "tunnel.bench.test";
/// No secret bound: mitmproxy intercepts it and changes nothing.
pub(super) const PLAIN_HOST: &str = "plain.bench.test";
/// A secret bound: both proxies intercept it and swap the placeholder for the real value.
pub(super) const SECRET_HOST: &str = "secret.bench.test";
/// Name of the bench's secret (and the environment variable it is read from).
const SECRET_NAME: &str = "BENCH_API_KEY";

/// Everything the proxy table shows.
pub(super) struct Egress {
    pub(super) direct: Run,
    pub(super) tunnel: Run,
    pub(super) inject: Run,
    /// Requests and tunnels our proxy's audit summary counted, per host.
    pub(super) audited: Vec<(String, u64)>,
    /// Names of secrets our proxy reports as injected.
    pub(super) secrets_used: Vec<String>,
    pub(super) mitm: Result<MitmRuns>,
}

/// mitmproxy's three runs.
pub(super) struct MitmRuns {
    pub(super) version: String,
    pub(super) passthrough: Run,
    pub(super) intercept: Run,
    pub(super) inject: Run,
}

fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} runtime"))
}

/// A random value shaped like an API key (the proxy needs enough characters to tell it from
/// ordinary text).
fn fake_key() -> String {
    let mut rng = rand::rng();
    let tail: String = (0..40)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect();
    format!("sk-bench-{tail}")
}

/// Measures every path; mitmproxy's absence (or failure) is recorded, not fatal.
pub(super) fn measure(opts: &Options) -> Result<Egress> {
    let server_rt = runtime(SERVER_THREADS)?;
    let proxy_rt = runtime(PROXY_THREADS)?;
    let client_rt = runtime("bb-client")?;
    let pki = Pki::new(&[TUNNEL_HOST, PLAIN_HOST, SECRET_HOST])?;

    let secret = fake_key();
    let policy = Policy::from_json(
        &serde_json::json!({
            "network": {
                "allow": [TUNNEL_HOST, PLAIN_HOST, SECRET_HOST],
                "allow_private": [TUNNEL_HOST, PLAIN_HOST, SECRET_HOST],
            },
            "secrets": [{"name": SECRET_NAME, "hosts": [SECRET_HOST], "env": SECRET_NAME}],
        })
        .to_string(),
    )?;
    let secrets =
        ResolvedSecrets::resolve_with(&policy, |var| (var == SECRET_NAME).then(|| secret.clone()))?;
    let placeholder = secrets
        .iter()
        .next()
        .map(|s| s.placeholder.clone())
        .context("the bench policy resolved no secret")?;
    let bearer = |v: &str| format!("Bearer {v}");
    let expected = HashMap::from([
        (TUNNEL_HOST.to_owned(), bearer(&placeholder)),
        (PLAIN_HOST.to_owned(), bearer(&placeholder)),
        (SECRET_HOST.to_owned(), bearer(&secret)),
    ]);
    let server = server::start(&server_rt, &pki, expected)?;

    let dir = tempfile::tempdir()?;
    let ca = Ca::load_or_create(&dir.path().join("ca"))?;
    let resolve: HashMap<String, SocketAddr> = [TUNNEL_HOST, PLAIN_HOST, SECRET_HOST]
        .iter()
        .map(|h| ((*h).to_owned(), server.addr))
        .collect();
    let ours = proxy_rt
        .block_on(EgressProxy::start(ProxyConfig {
            bottle_id: "bytebot-bench".to_owned(),
            network: policy.network,
            secrets,
            ca: std::sync::Arc::clone(&ca),
            audit_path: dir.path().join("audit.jsonl"),
            listen: Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            extra_upstream_roots: vec![pki.ca_pem.clone()],
            resolve,
        }))
        .context("starting our egress proxy")?;
    let ours_addr = ours
        .tcp_addr()
        .context("our proxy reports no TCP address")?;

    // mitmproxy first, so every client trusts the same three roots.
    let mitm: Result<Mitm> = mitm::find(opts.mitmdump.as_deref()).and_then(|path| {
        eprintln!("bottle: starting {} …", path.display());
        mitm::start(
            &path,
            &mitm::Setup {
                host_suffix: HOST_SUFFIX,
                passthrough_host: TUNNEL_HOST,
                secret_host: SECRET_HOST,
                placeholder: &placeholder,
                secret: &secret,
                upstream_ca_pem: &pki.ca_pem,
            },
        )
    });
    let mut roots = vec![pki.ca_pem.as_str(), ca.cert_pem()];
    if let Ok(m) = &mitm {
        roots.push(m.ca_pem.as_str());
    }

    let tls = load::tls_config(&roots)?;
    let shape = (opts.warmup, opts.seconds, opts.connections);
    let run = |label: &str, proxy: Option<SocketAddr>, host: &str, external: Option<u32>| {
        eprintln!("bottle: load, {label} …");
        let target = load::Target {
            host: host.to_owned(),
            port: server.addr.port(),
            proxy,
            server: server.addr,
            tls: std::sync::Arc::clone(&tls),
            authorization: bearer(&placeholder),
        };
        client_rt.block_on(load::run(target, shape, external, &server.counts))
    };

    let direct = run("direct", None, TUNNEL_HOST, None);
    let tunnel = run("our proxy, tunnel", Some(ours_addr), TUNNEL_HOST, None);
    let inject = run(
        "our proxy, secret injected",
        Some(ours_addr),
        SECRET_HOST,
        None,
    );
    let summary: EgressSummary = proxy_rt.block_on(ours.shutdown());
    let mitm_runs = match &mitm {
        Ok(m) => {
            let pid = Some(m.pid());
            Ok(MitmRuns {
                version: m.version.clone(),
                passthrough: run("mitmproxy, passthrough", Some(m.addr), TUNNEL_HOST, pid),
                intercept: run("mitmproxy, intercepted", Some(m.addr), PLAIN_HOST, pid),
                inject: run("mitmproxy, header swapped", Some(m.addr), SECRET_HOST, pid),
            })
        }
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    // Stops mitmdump now, not after the report.
    drop(mitm);
    Ok(Egress {
        direct,
        tunnel,
        inject,
        audited: summary
            .hosts
            .iter()
            .map(|h| (h.host.clone(), h.requests))
            .collect(),
        secrets_used: summary.secrets_used,
        mitm: mitm_runs,
    })
}

/// Requests per proxy CPU-second (how much work the proxy does per request).
pub(super) fn per_cpu_second(r: &Run) -> f64 {
    r.per_s / (r.usage.proxy / 100.0).max(1e-9)
}

/// A latency summary cell: p50 / p99 / max.
pub(super) fn latency(q: &Quantiles) -> String {
    format!("{:.2} / {:.2} / {:.2} ms", q.p50, q.p99, q.max)
}
