//! The per-request decisions, over tables compiled when they change: the
//! org an `X-Lectr-Key` belongs to, the provider a model goes to, the
//! routing rule that applies, the failover path and each hop's URL. No I/O
//! and no Python: `plan` wraps these for the handler.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A request the gateway answers itself: the error's `code` (the Python
/// side maps it onto its error class) and a message fit for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The gateway error code (`invalid_lectr_key`, `invalid_provider`, ...).
    pub code: &'static str,
    /// What the client is told.
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// One provider: how to recognise its models and how to call it.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its name (`openai`, `azure`, ...).
    pub name: String,
    /// Model-name prefixes that mean this provider.
    pub prefixes: Vec<String>,
    /// How the key is sent (see `headers.rs`).
    pub auth_style: String,
    /// The one base URL, or `None` when it is per org (Azure).
    pub base_url: Option<String>,
}

/// The provider table and which protocols each serves; built once from the
/// settings.
#[derive(Debug, Clone)]
pub struct Catalog {
    providers: Vec<Provider>,
    by_name: HashMap<String, usize>,
    /// Longest prefix first, so a more specific one always wins.
    prefixes: Vec<(String, usize)>,
    /// Protocol → the providers that answer it; a protocol absent here is
    /// answered by all.
    served_by: HashMap<String, Vec<usize>>,
    /// Protocol → the provider a model we do not recognise goes to.
    default_for: HashMap<String, usize>,
    default: usize,
    valid_names: String,
}

impl Catalog {
    /// Compile the table. `default` and every name in `served_by` and
    /// `default_for` must be a provider of `providers`.
    pub fn new(
        providers: Vec<Provider>,
        served_by: &HashMap<String, Vec<String>>,
        default_for: &HashMap<String, String>,
        default: &str,
    ) -> Result<Catalog, String> {
        let by_name: HashMap<String, usize> = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let idx = |n: &str| {
            by_name
                .get(n)
                .copied()
                .ok_or_else(|| format!("unknown provider {n:?}"))
        };
        let mut prefixes: Vec<(String, usize)> = providers
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.prefixes.iter().map(move |x| (x.to_lowercase(), i)))
            .collect();
        prefixes.sort_by_key(|(x, _)| std::cmp::Reverse(x.len()));
        let mut served = HashMap::new();
        for (proto, names) in served_by {
            let ids = names
                .iter()
                .map(|n| idx(n))
                .collect::<Result<Vec<_>, _>>()?;
            served.insert(proto.clone(), ids);
        }
        let mut defaults = HashMap::new();
        for (proto, name) in default_for {
            defaults.insert(proto.clone(), idx(name)?);
        }
        let valid_names = providers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Catalog {
            default: idx(default)?,
            providers,
            by_name,
            prefixes,
            served_by: served,
            default_for: defaults,
            valid_names,
        })
    }

    /// The provider at `i` (an index this catalog handed out).
    pub fn provider(&self, i: usize) -> Option<&Provider> {
        self.providers.get(i)
    }

    /// The index of the provider named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The provider for a request and whether it was a guess: an
    /// `X-Lectr-Provider` value wins (an unknown one is refused, naming
    /// the valid values); else the model's prefix; else the default,
    /// flagged unknown.
    pub fn detect(
        &self,
        model: Option<&str>,
        override_: Option<&str>,
    ) -> Result<(usize, bool), Refusal> {
        if let Some(o) = override_.filter(|o| !o.is_empty()) {
            return match self.index(&o.trim().to_lowercase()) {
                Some(i) => Ok((i, false)),
                None => {
                    let shown: String = o.chars().take(64).collect();
                    Err(refuse(
                        "invalid_provider",
                        format!(
                            "unknown X-Lectr-Provider {}; valid values: {}",
                            quoted(&shown),
                            self.valid_names
                        ),
                    ))
                }
            };
        }
        if let Some(m) = model.filter(|m| !m.is_empty()) {
            let m = m.to_lowercase();
            if let Some((_, i)) = self
                .prefixes
                .iter()
                .find(|(p, _)| m.starts_with(p.as_str()))
            {
                return Ok((*i, false));
            }
        }
        Ok((self.default, true))
    }

    /// Whether provider `i` answers requests of `protocol`.
    pub fn serves(&self, protocol: &str, i: usize) -> bool {
        self.served_by
            .get(protocol)
            .is_none_or(|ids| ids.contains(&i))
    }

    /// The providers answering `protocol`, by name, sorted (for messages).
    pub fn served_names(&self, protocol: &str) -> String {
        let mut names: Vec<&str> = match self.served_by.get(protocol) {
            Some(ids) => ids
                .iter()
                .filter_map(|i| self.providers.get(*i))
                .map(|p| p.name.as_str())
                .collect(),
            None => self.providers.iter().map(|p| p.name.as_str()).collect(),
        };
        names.sort_unstable();
        names.join(", ")
    }

    /// The provider a `protocol` request with an unrecognised model goes to.
    pub fn default_for(&self, protocol: &str) -> Option<usize> {
        self.default_for.get(protocol).copied()
    }

    /// The URL to call for `path` (e.g. `/chat/completions`) on provider
    /// `i`, for `org` (Azure's endpoint is per org), with the client's
    /// query string for a provider with one base URL.
    pub fn url(
        &self,
        i: usize,
        path: &str,
        model: Option<&str>,
        org: &Org,
        query: &str,
    ) -> Result<String, Refusal> {
        let p = self
            .providers
            .get(i)
            .ok_or_else(|| refuse("internal_error", "unknown provider index"))?;
        if let Some(base) = &p.base_url {
            let mut url = format!("{}{path}", base.trim_end_matches('/'));
            if !query.is_empty() {
                url.push('?');
                url.push_str(query);
            }
            return Ok(url);
        }
        azure_url(path, model, org)
    }
}

fn azure_url(path: &str, model: Option<&str>, org: &Org) -> Result<String, Refusal> {
    let (Some(endpoint), Some(version)) = (
        org.azure_endpoint.as_deref().filter(|s| !s.is_empty()),
        org.azure_api_version.as_deref().filter(|s| !s.is_empty()),
    ) else {
        return Err(refuse(
            "azure_config_missing",
            "this org has no Azure endpoint and api-version configured; \
             set them with `lectr orgs azure ORG --endpoint URL --api-version VERSION`",
        ));
    };
    let endpoint = endpoint.trim_end_matches('/');
    let version = percent_encode(version);
    if path == "/models" {
        return Ok(format!("{endpoint}/openai/models?api-version={version}"));
    }
    if path == "/responses" || path.starts_with("/responses/") {
        // Azure's v1 API: the deployment is the body's `model`, no api-version.
        return Ok(format!("{endpoint}/openai/v1{path}"));
    }
    let Some(model) = model.filter(|m| !m.is_empty()) else {
        return Err(refuse(
            "invalid_request",
            "Azure requests need a model (the deployment name)",
        ));
    };
    if model == "." || model == ".." || model.trim().is_empty() {
        // Percent-encoding leaves dot segments alone, and every HTTP stack
        // on the way resolves them: `..` would address another path of the
        // endpoint, not a deployment.
        let shown: String = model.chars().take(100).collect();
        return Err(refuse(
            "invalid_request",
            format!("invalid Azure deployment name {}", quoted(&shown)),
        ));
    }
    Ok(format!(
        "{endpoint}/openai/deployments/{}{path}?api-version={version}",
        percent_encode(model)
    ))
}

/// Percent-encode every byte but the unreserved ones (RFC 3986), as
/// Python's `quote(s, safe="")`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client-controlled string shown in a message, JSON-quoted.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// An org as the request path sees it.
#[derive(Debug, Clone)]
pub struct Org {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Disabled orgs are refused.
    pub disabled: bool,
    /// Azure resource endpoint, if configured.
    pub azure_endpoint: Option<String>,
    /// Azure API version, if configured.
    pub azure_api_version: Option<String>,
}

/// A routing rule: exact-match conditions (unset = any), AND-ed.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// Its id, recorded on the requests it routes.
    pub id: String,
    /// Condition on the feature tag.
    pub match_feature: Option<String>,
    /// Condition on the task tag.
    pub match_task: Option<String>,
    /// Condition on the detected provider.
    pub match_provider: Option<String>,
    /// Condition on the requested model.
    pub match_model: Option<String>,
    /// The provider it sends matches to.
    pub target_provider: Option<String>,
    /// The model it sends matches to.
    pub target_model: Option<String>,
    /// The share of matches it takes, 0-100.
    pub split_percent: u32,
}

/// A failover path: targets (provider, model) and the statuses that move on.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// The hops after the first, in order; an empty model keeps the request's.
    pub targets: Vec<(String, String)>,
    /// Provider statuses that move the request to the next hop.
    pub on_status: Vec<u16>,
}

/// Where a request goes: provider and model, and the rule that said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Provider index.
    pub provider: usize,
    /// The model, if any.
    pub model: Option<String>,
    /// The rule that decided, if one did.
    pub rule_id: Option<String>,
}

/// The control-plane tables the request path reads: keys, orgs, rules and
/// failover paths, compiled from a snapshot.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Key prefix → (SHA-256 of the whole key, org id).
    pub keys: HashMap<String, ([u8; 32], String)>,
    /// Org id → org.
    pub orgs: HashMap<String, Org>,
    /// Org id → enabled rules in evaluation order.
    pub rules: HashMap<String, Vec<Rule>>,
    /// Org id → scope (a feature, or `*`) → chain.
    pub chains: HashMap<String, HashMap<String, Chain>>,
}

/// Keys are `lc_key_` then 43 characters; the first 8 of those are public.
pub const KEY_PREFIX: &str = "lc_key_";

impl Control {
    /// The org owning `key`. The public prefix finds the candidate; the full
    /// hash is then compared in constant time, so timing reveals nothing
    /// about the secret part.
    pub fn org_for_key(&self, key: Option<&str>) -> Result<&Org, Refusal> {
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(refuse(
                "missing_lectr_key",
                "missing X-Lectr-Key header: add your org key (lc_key_...) to every request",
            ));
        };
        let unknown = || {
            refuse(
                "invalid_lectr_key",
                "invalid X-Lectr-Key: unknown or revoked org key",
            )
        };
        let public = key
            .strip_prefix(KEY_PREFIX)
            .filter(|rest| rest.len() >= 32)
            .and_then(|rest| rest.get(..8));
        let Some(public) = public else {
            return Err(refuse(
                "invalid_lectr_key",
                "invalid X-Lectr-Key: org keys look like lc_key_ followed by 43 characters",
            ));
        };
        let (hash, org_id) = self.keys.get(public).ok_or_else(unknown)?;
        let given: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let diff = hash
            .iter()
            .zip(given.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(unknown());
        }
        let org = self.orgs.get(org_id).ok_or_else(unknown)?;
        if org.disabled {
            return Err(refuse(
                "org_disabled",
                format!("org {} is disabled", quoted(&org.name)),
            ));
        }
        Ok(org)
    }

    /// The feature's failover path, else the org's default one.
    pub fn chain(&self, org_id: &str, feature: &str) -> Option<&Chain> {
        let chains = self.chains.get(org_id)?;
        chains.get(feature).or_else(|| chains.get("*"))
    }

    /// The route for a request: the first rule (in order) whose set
    /// conditions all match exactly, whose target provider answers the
    /// protocol, and whose split share `roll` (uniform in [0, 1)) falls
    /// in. A rule passed over by its split hands the rest of the roll on,
    /// rescaled, so each split is an independent draw. No match: as sent.
    #[allow(clippy::too_many_arguments)]
    pub fn route(
        &self,
        catalog: &Catalog,
        org_id: &str,
        protocol: &str,
        feature: &str,
        task: Option<&str>,
        provider: usize,
        model: Option<&str>,
        mut roll: f64,
    ) -> Route {
        let name = catalog.provider(provider).map_or("", |p| p.name.as_str());
        let is =
            |cond: &Option<String>, v: Option<&str>| cond.as_deref().is_none_or(|c| Some(c) == v);
        for r in self.rules.get(org_id).into_iter().flatten() {
            if !(is(&r.match_feature, Some(feature))
                && is(&r.match_task, task)
                && is(&r.match_provider, Some(name))
                && is(&r.match_model, model))
            {
                continue;
            }
            let target = match r.target_provider.as_deref().filter(|t| !t.is_empty()) {
                // A target we cannot call, or that cannot answer the
                // protocol, is passed over: routing never fails a request.
                Some(t) => match catalog.index(t) {
                    Some(i) if catalog.serves(protocol, i) => i,
                    _ => continue,
                },
                None => provider,
            };
            if r.split_percent < 100 {
                let share = f64::from(r.split_percent) / 100.0;
                if roll >= share {
                    roll = if share < 1.0 {
                        (roll - share) / (1.0 - share)
                    } else {
                        0.0
                    };
                    continue;
                }
            }
            return Route {
                provider: target,
                model: r
                    .target_model
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .or(model)
                    .map(str::to_owned),
                rule_id: Some(r.id.clone()),
            };
        }
        Route {
            provider,
            model: model.map(str::to_owned),
            rule_id: None,
        }
    }
}

/// A provider table and an org for tests and the fuzz target (feature
/// `fixtures`): OpenAI, Anthropic (the only one answering `messages`),
/// Groq, and Azure (index 3) with a per-org endpoint.
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use std::collections::HashMap;

    use super::{Catalog, Org, Provider};

    /// The provider table; `None` if it no longer compiles.
    pub fn catalog() -> Option<Catalog> {
        let p = |n: &str, pf: &[&str], base: Option<&str>| Provider {
            name: n.to_owned(),
            prefixes: pf.iter().map(|s| (*s).to_owned()).collect(),
            auth_style: "bearer".to_owned(),
            base_url: base.map(str::to_owned),
        };
        let served = HashMap::from([("messages".to_owned(), vec!["anthropic".to_owned()])]);
        let defaults = HashMap::from([("messages".to_owned(), "anthropic".to_owned())]);
        Catalog::new(
            vec![
                p("openai", &["gpt-", "o1"], Some("http://o/v1/")),
                p("anthropic", &["claude-"], Some("http://a/v1")),
                p("groq", &["gpt-oss-"], Some("http://g/v1")),
                p("azure", &[], None),
            ],
            &served,
            &defaults,
            "openai",
        )
        .ok()
    }

    /// Org `o`, with Azure's endpoint (trailing `/`) and api-version set.
    pub fn org() -> Org {
        Org {
            id: "o".into(),
            name: "o".into(),
            disabled: false,
            azure_endpoint: Some("https://r.openai.azure.com/".into()),
            azure_api_version: Some("2024-10-21".into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::fixtures::org;
    use super::*;

    fn catalog() -> Catalog {
        fixtures::catalog().unwrap()
    }

    #[test]
    fn detects_by_longest_prefix_and_override() {
        let c = catalog();
        assert_eq!(c.detect(Some("GPT-4o"), None).unwrap(), (0, false));
        assert_eq!(c.detect(Some("gpt-oss-20b"), None).unwrap(), (2, false));
        assert_eq!(c.detect(Some("mistral"), None).unwrap(), (0, true));
        assert_eq!(c.detect(None, Some(" Groq ")).unwrap(), (2, false));
        let e = c.detect(None, Some("nope")).unwrap_err();
        assert_eq!(e.code, "invalid_provider");
        assert!(e.message.contains("openai, anthropic, groq, azure"));
    }

    #[test]
    fn builds_urls() {
        let c = catalog();
        let o = org();
        assert_eq!(
            c.url(0, "/chat/completions", None, &o, "").unwrap(),
            "http://o/v1/chat/completions"
        );
        assert_eq!(
            c.url(1, "/models", None, &o, "a=1").unwrap(),
            "http://a/v1/models?a=1"
        );
        assert_eq!(
            c.url(3, "/chat/completions", Some("my deploy"), &o, "x=1")
                .unwrap(),
            "https://r.openai.azure.com/openai/deployments/my%20deploy/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            c.url(3, "/chat/completions", Some(".."), &o, "")
                .unwrap_err()
                .code,
            "invalid_request"
        );
        let bare = Org {
            azure_endpoint: None,
            ..org()
        };
        assert_eq!(
            c.url(3, "/chat/completions", Some("m"), &bare, "")
                .unwrap_err()
                .code,
            "azure_config_missing"
        );
    }

    #[test]
    fn resolves_keys_in_constant_time_compare() {
        let key = format!("{KEY_PREFIX}{}", "A".repeat(43));
        let mut ctl = Control::default();
        ctl.keys.insert(
            "AAAAAAAA".into(),
            (Sha256::digest(key.as_bytes()).into(), "o".into()),
        );
        ctl.orgs.insert("o".into(), org());
        assert_eq!(ctl.org_for_key(Some(&key)).unwrap().id, "o");
        let other = format!("{KEY_PREFIX}{}B", "A".repeat(42));
        assert_eq!(
            ctl.org_for_key(Some(&other)).unwrap_err().code,
            "invalid_lectr_key"
        );
        assert_eq!(ctl.org_for_key(None).unwrap_err().code, "missing_lectr_key");
        assert_eq!(
            ctl.org_for_key(Some("lc_key_short")).unwrap_err().code,
            "invalid_lectr_key"
        );
        ctl.orgs.get_mut("o").unwrap().disabled = true;
        assert_eq!(
            ctl.org_for_key(Some(&key)).unwrap_err().code,
            "org_disabled"
        );
    }

    #[test]
    fn a_split_passes_the_rest_of_its_roll_on() {
        let c = catalog();
        let mut ctl = Control::default();
        let rule = |id: &str, split: u32, m: &str| Rule {
            id: id.into(),
            target_model: Some(m.into()),
            split_percent: split,
            ..Rule::default()
        };
        ctl.rules
            .insert("o".into(), vec![rule("a", 50, "ma"), rule("b", 50, "mb")]);
        let at = |roll: f64| {
            ctl.route(&c, "o", "chat", "f", None, 0, Some("m"), roll)
                .rule_id
        };
        assert_eq!(at(0.2).as_deref(), Some("a"));
        assert_eq!(at(0.6).as_deref(), Some("b")); // (0.6 - 0.5) / 0.5 = 0.2
        assert_eq!(at(0.9), None); // 0.8: past b's half too
    }
}
