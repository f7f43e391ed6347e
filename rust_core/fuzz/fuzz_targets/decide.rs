//! The per-request decisions on client-controlled strings (org key, model,
//! `X-Lectr-Provider`, tags, query): none panics; a key is accepted only
//! when it is the org's own; an Azure deployment stays one path segment
//! that decodes to the model; a key's refusal never depends on the key,
//! and every other refusal's message is one line.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use _core::decide::{Catalog, Chain, Control, KEY_PREFIX, Rule, fixtures, percent_encode};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const ENDPOINT: &str = "https://r.openai.azure.com";
const PATH: &str = "/chat/completions";
/// Azure's index in the fixture catalog.
const AZURE: usize = 3;

static KEY: LazyLock<String> = LazyLock::new(|| format!("{KEY_PREFIX}{}", "k".repeat(43)));

static CATALOG: LazyLock<Option<Catalog>> = LazyLock::new(fixtures::catalog);

static CONTROL: LazyLock<Control> = LazyLock::new(|| {
    let mut ctl = Control::default();
    let public = KEY
        .get(KEY_PREFIX.len()..KEY_PREFIX.len() + 8)
        .unwrap_or_default();
    ctl.keys.insert(
        public.to_owned(),
        (Sha256::digest(KEY.as_bytes()).into(), "o".to_owned()),
    );
    ctl.orgs.insert("o".to_owned(), fixtures::org());
    let rule = |id: &str, feature: Option<&str>, provider: Option<&str>, split: u32| Rule {
        id: id.to_owned(),
        match_feature: feature.map(str::to_owned),
        target_provider: provider.map(str::to_owned),
        target_model: Some(format!("{id}-model")),
        split_percent: split,
        ..Rule::default()
    };
    ctl.rules.insert(
        "o".to_owned(),
        vec![
            rule("canary", Some("chat"), Some("anthropic"), 10),
            rule("nowhere", None, Some("nope"), 100),
            rule("half", None, None, 50),
        ],
    );
    ctl.chains.insert(
        "o".to_owned(),
        HashMap::from([("*".to_owned(), Chain::default())]),
    );
    ctl
});

/// The messages a key is refused with: missing, malformed, unknown.
static KEY_MESSAGES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let wrong = format!("{KEY_PREFIX}{}", "w".repeat(43));
    [None, Some("lc_key_short"), Some(wrong.as_str())]
        .into_iter()
        .filter_map(|k| CONTROL.org_for_key(k).err())
        .map(|r| r.message)
        .collect()
});

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}

fn one_line(message: &str) {
    assert!(
        !message.contains(['\n', '\r']),
        "a refusal spans lines: {message:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(catalog) = CATALOG.as_ref() else {
        panic!("the fixed catalog does not compile");
    };
    let Some((&roll, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.split(|b| *b == 0).map(|f| std::str::from_utf8(f).ok());
    let mut next = || fields.next().flatten().unwrap_or_default();
    let (key, model, over, feature, task, query) = (next(), next(), next(), next(), next(), next());
    let model = Some(model).filter(|m| !m.is_empty());

    // The key: only the org's own is accepted, and a refusal's message is
    // one of the fixed ones, whatever the key held.
    match CONTROL.org_for_key(Some(key)) {
        Ok(org) => assert!(key == KEY.as_str() && org.id == "o"),
        Err(r) => assert!(
            KEY_MESSAGES.contains(&r.message),
            "a key refusal says {:?}",
            r.message
        ),
    }

    // Detection: an override names the provider it picks.
    let provider = match catalog.detect(model, Some(over)) {
        Ok((i, unknown)) => {
            let name = catalog.provider(i).map(|p| p.name.as_str());
            if !over.is_empty() {
                assert_eq!(name, Some(over.trim().to_lowercase().as_str()));
                assert!(!unknown);
            }
            i
        }
        Err(r) => {
            assert_eq!(r.code, "invalid_provider");
            one_line(&r.message);
            return;
        }
    };

    // Routing: a provider of the catalog, and a rule that exists.
    let protocol = if roll & 1 == 0 { "chat" } else { "messages" };
    let route = CONTROL.route(
        catalog,
        "o",
        protocol,
        feature,
        Some(task).filter(|t| !t.is_empty()),
        provider,
        model,
        f64::from(roll) / 256.0,
    );
    assert!(catalog.provider(route.provider).is_some());
    assert!(catalog.serves(protocol, route.provider) || route.provider == provider);
    if let Some(id) = route.rule_id.as_deref() {
        assert!(["canary", "half"].contains(&id), "routed by {id}");
    }

    // URLs: a base URL takes the query as given; Azure's deployment is one
    // segment that decodes back to the model.
    let Some(org) = CONTROL.orgs.get("o") else {
        return;
    };
    match catalog.url(0, PATH, model, org, query) {
        Ok(url) => {
            let want = if query.is_empty() {
                format!("http://o/v1{PATH}")
            } else {
                format!("http://o/v1{PATH}?{query}")
            };
            assert_eq!(url, want);
        }
        Err(r) => panic!("a base-URL provider refused: {}", r.message),
    }
    match catalog.url(AZURE, PATH, model, org, query) {
        Ok(url) => {
            let Some(rest) = url.strip_prefix(&format!("{ENDPOINT}/openai/deployments/")) else {
                panic!("not under the deployments: {url}");
            };
            let Some((segment, tail)) = rest.split_once('/') else {
                panic!("no path after the deployment: {url}");
            };
            assert_eq!(tail, "chat/completions?api-version=2024-10-21");
            assert!(segment != "." && segment != "..", "a dot segment: {url}");
            assert_eq!(segment, percent_encode(model.unwrap_or_default()));
            assert_eq!(
                percent_decode(segment).as_deref(),
                model.map(str::as_bytes),
                "the deployment does not decode to the model"
            );
        }
        Err(r) => {
            assert_eq!(r.code, "invalid_request");
            one_line(&r.message);
        }
    }
});
