//! `weft-proxy explain`: which route and rule a request would take, why
//! every other rule of its host does not, the backend split, and every
//! effective setting with where it came from — without sending anything.
//!
//! The config is the files `run` and `check` load (same loader, same
//! errors), or the control plane's view for a named proxy (every resource
//! that proxy could see, `GET /resources` on its admin endpoint). The
//! answer comes from the proxy's own name table, matchers and policy
//! merge, so it says what the proxy would do. Exit 0 when a rule matches,
//! 1 when none does (naming the nearest miss), 2 on bad input.

mod fetch;
mod matching;
mod render;
mod settings;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use matching::{Outcome, Request};
use std::path::PathBuf;
use weft_mesh::config::{ConfigErrors, ConfigSet};

/// Flags of `weft-proxy explain`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Config file, or folder of *.yaml files (as `run --config`); repeatable.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "control_plane_admin"
    )]
    pub config: Vec<PathBuf>,
    /// The service the proxy fronts (as `run --service`).
    #[arg(long, conflicts_with = "proxy")]
    pub service: Option<String>,
    /// The proxy's namespace: bare names and consumer routes resolve in it
    /// (as `run --namespace`).
    #[arg(long, default_value = "default", conflicts_with = "proxy")]
    pub namespace: String,
    /// Instead of files: the control plane's admin endpoint
    /// (`http://host:15014`), asked for everything `--proxy` could see.
    #[arg(
        long,
        value_name = "URL",
        requires = "proxy",
        conflicts_with = "config"
    )]
    pub control_plane_admin: Option<String>,
    /// With `--control-plane-admin`: the proxy to explain for, as NAMESPACE/SERVICE.
    #[arg(
        long,
        value_name = "NS/SERVICE",
        requires = "control_plane_admin",
        conflicts_with = "config"
    )]
    pub proxy: Option<String>,
    /// The request as a URL: `http://reviews.shop:8080/api?x=1` (the scheme may be left out).
    #[arg(
        value_name = "URL",
        required_unless_present = "host",
        conflicts_with = "host"
    )]
    pub url: Option<String>,
    /// The request's authority (`host` or `host:port`), instead of a URL.
    #[arg(long)]
    pub host: Option<String>,
    /// With `--host`: the path, with any `?query`.
    #[arg(long, requires = "host", default_value = "/")]
    pub path: String,
    /// The request's method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// A request header, `'name: value'` or `name=value`; repeatable. A
    /// `host` header stands for the authority, as it does on the wire.
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    pub headers: Vec<String>,
}

/// Bad input: exit 2.
struct Bad(String);

/// Runs `explain`, printing to stdout (errors to stderr); returns the exit code.
pub fn explain(args: ExplainArgs) -> i32 {
    match run(&args) {
        Ok((text, matched)) => {
            print!("{text}");
            if matched {
                0
            } else {
                1
            }
        }
        Err(Bad(msg)) => {
            eprintln!("{msg}");
            2
        }
    }
}

fn run(args: &ExplainArgs) -> Result<(String, bool), Bad> {
    let req = request(args)?;
    let (set, namespace) = config(args)?;
    let outcome = matching::resolve(&set, &namespace, &req);
    let mut out = String::new();
    render::request(&mut out, &req);
    let matched = render::outcome(&mut out, &req, &outcome);
    if let Outcome::Host(h) = &outcome {
        if let Some(w) = h.winner {
            let c = &h.candidates[w];
            // An implicit rule's Backend is the one the name leads to.
            let implicit = match c.at {
                None => weft_mesh::names::NameTable::build(&set, &namespace)
                    .get(&req.authority)
                    .and_then(|d| d.backend)
                    .map(|b| &set.backends[b]),
                Some(_) => None,
            };
            render::rule(
                &mut out,
                &settings::rule_view(&set, c.at.as_ref(), implicit),
            );
        }
    }
    Ok((out, matched))
}

/// The config and the namespace to resolve names in.
fn config(args: &ExplainArgs) -> Result<(ConfigSet, String), Bad> {
    let loaded = match (&args.control_plane_admin, &args.proxy) {
        (Some(admin), Some(proxy)) => {
            let (ns, service) = proxy
                .split_once('/')
                .filter(|(n, s)| fetch::valid_name(n) && fetch::valid_name(s))
                .ok_or_else(|| {
                    Bad(format!(
                        "--proxy {proxy:?}: expected NAMESPACE/SERVICE (lower-case names)"
                    ))
                })?;
            let text = fetch::resources(admin, ns, service)
                .map_err(|e| Bad(format!("weft-proxy explain: {e}")))?;
            let source = format!("{admin}/resources?namespace={ns}&service={service}");
            let set = weft_mesh::config::load_sources(vec![(source, text)]);
            (set, ns.to_owned())
        }
        _ => (
            weft_mesh::config::load_paths(&args.config),
            args.namespace.clone(),
        ),
    };
    match loaded {
        (Ok(set), ns) => Ok((set, ns)),
        (Err(ConfigErrors(errors)), _) => {
            let n = errors.len();
            Err(Bad(format!("{}\n{n} error(s)", ConfigErrors(errors))))
        }
    }
}

/// The request the flags describe.
fn request(args: &ExplainArgs) -> Result<Request, Bad> {
    let bad = |m: String| Bad(format!("weft-proxy explain: {m}"));
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| bad(format!("--method {:?}: not an HTTP method", args.method)))?;
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (name, value) = split_header(h).ok_or_else(|| {
            bad(format!(
                "--header {h:?}: expected 'name: value' or name=value"
            ))
        })?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            bad(format!(
                "--header {h:?}: {:?} is not a header name",
                name.trim()
            ))
        })?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| bad(format!("--header {h:?}: the value is not a header value")))?;
        headers.append(name, value);
    }
    let (authority, path_and_query) = match (&args.url, &args.host) {
        (Some(url), _) => {
            let full = match url.contains("://") {
                true => url.clone(),
                false => format!("http://{url}"),
            };
            let uri: http::Uri = full
                .parse()
                .map_err(|e| bad(format!("{url:?}: not a URL: {e}")))?;
            let authority = uri
                .authority()
                .ok_or_else(|| bad(format!("{url:?}: no host")))?;
            let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            (authority.as_str().to_owned(), pq.to_owned())
        }
        (None, Some(host)) => (host.clone(), args.path.clone()),
        (None, None) => return Err(bad("give the request as a URL or with --host".into())),
    };
    // A Host header is the authority on the wire (curl -H 'Host: ...').
    let authority = match headers.get(http::header::HOST) {
        Some(h) => h
            .to_str()
            .map_err(|_| bad("the host header is not text".into()))?
            .to_owned(),
        None => authority,
    };
    if authority.is_empty() || authority.parse::<http::uri::Authority>().is_err() {
        return Err(bad(format!("{authority:?}: not a host or host:port")));
    }
    let pq: http::uri::PathAndQuery = path_and_query
        .parse()
        .map_err(|e| bad(format!("path {path_and_query:?}: {e}")))?;
    if !pq.path().starts_with('/') {
        return Err(bad(format!("path {path_and_query:?}: must start with /")));
    }
    Ok(Request {
        method,
        authority,
        path: pq.path().to_owned(),
        query: pq.query().map(str::to_owned),
        headers,
    })
}

/// `name: value` (a colon before any `=`) or `name=value`.
fn split_header(h: &str) -> Option<(&str, &str)> {
    match (h.find(':'), h.find('=')) {
        (Some(c), Some(e)) if e < c => h.split_once('='),
        (Some(_), _) => h.split_once(':'),
        (None, Some(_)) => h.split_once('='),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExplainArgs,
    }

    fn req(argv: &[&str]) -> Result<Request, String> {
        let mut all = vec!["explain", "--config", "x.yaml"];
        all.extend_from_slice(argv);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        request(&cli.args).map_err(|Bad(m)| m)
    }

    #[test]
    fn requests_from_flags_and_urls() {
        let r = req(&[
            "http://Reviews.shop:8080/api/v2?x=1&y",
            "-H",
            "x-canary: 1",
            "-H",
            "x-a=b:c",
        ])
        .unwrap();
        assert_eq!(
            (r.authority.as_str(), r.path.as_str()),
            ("Reviews.shop:8080", "/api/v2")
        );
        assert_eq!(r.query.as_deref(), Some("x=1&y"));
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.headers["x-canary"], "1");
        assert_eq!(r.headers["x-a"], "b:c");
        let r = req(&["reviews.shop"]).unwrap();
        assert_eq!(
            (r.authority.as_str(), r.path.as_str()),
            ("reviews.shop", "/")
        );
        let r = req(&["--host", "a.b", "--path", "/p?q=1", "--method", "POST"]).unwrap();
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/p", Some("q=1")));
        assert_eq!(r.method, Method::POST);
        let r = req(&["http://10.0.0.1/x", "-H", "Host: reviews.shop"]).unwrap();
        assert_eq!(r.authority, "reviews.shop");
        for bad in [
            vec!["--host", "a", "http://b/"],
            vec!["-H", "nothing", "http://a/"],
            vec!["-H", "bad name: v", "http://a/"],
            vec!["--method", "GE T", "http://a/"],
            vec!["--host", "a", "--path", "relative"],
            vec!["http:///nohost"],
            vec!["--proxy", "a/b", "http://a/"],
            vec!["--control-plane-admin", "http://127.0.0.1:1", "http://a/"],
            vec![],
        ] {
            assert!(req(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
