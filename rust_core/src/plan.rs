//! The handler's call for a request's decisions: `Catalog` (the provider
//! table, from the settings) and `Router` (the control snapshot's keys,
//! orgs, rules and failover paths) as Python objects, compiled when they
//! change, and the `Plan` a request gets back: its route and every hop of
//! its failover path with the URL and the upstream body ready. A request
//! the gateway answers itself raises `Refused(code, message, model,
//! provider)`, the last two as far as they were known.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::decide::{Catalog, Chain, Control, Org, Provider, Refusal, Route, Rule};
use crate::errors::Refused;
use crate::request::{RequestInfo, peek, rewrite};

impl From<Refusal> for PyErr {
    fn from(r: Refusal) -> PyErr {
        refused(r, None, None)
    }
}

/// `Refused(code, message, model, provider)`: with what was learned of the
/// request before it was refused, for its record.
fn refused(r: Refusal, model: Option<&str>, provider: Option<String>) -> PyErr {
    Refused::new_err((r.code, r.message, model.map(str::to_owned), provider))
}

fn refusal(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// The provider table as seen from Python.
#[pyclass(frozen, module = "lectr._core", name = "Catalog")]
pub struct PyCatalog {
    inner: Arc<Catalog>,
}

#[pymethods]
impl PyCatalog {
    /// `providers`: (name, model prefixes, auth style, base URL or None).
    #[new]
    fn new(
        providers: Vec<(String, Vec<String>, String, Option<String>)>,
        served_by: HashMap<String, Vec<String>>,
        default_for: HashMap<String, String>,
        default: &str,
    ) -> PyResult<Self> {
        let rows = providers
            .into_iter()
            .map(|(name, prefixes, auth_style, base_url)| Provider {
                name,
                prefixes,
                auth_style,
                base_url,
            })
            .collect();
        let inner = Catalog::new(rows, &served_by, &default_for, default)
            .map_err(pyo3::exceptions::PyValueError::new_err)?;
        Ok(PyCatalog {
            inner: Arc::new(inner),
        })
    }

    /// (provider name, whether it was a guess) for a model and an
    /// `X-Lectr-Provider` value.
    #[pyo3(signature = (model, override_=None))]
    fn detect(&self, model: Option<&str>, override_: Option<&str>) -> PyResult<(String, bool)> {
        let (i, unknown) = self.inner.detect(model, override_)?;
        Ok((self.name(i), unknown))
    }
}

impl PyCatalog {
    fn name(&self, i: usize) -> String {
        self.inner
            .provider(i)
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }
}

/// A rule row: (org id, rule id, match feature, task, provider, model,
/// target provider, model, split percent), in evaluation order.
type RuleRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    u32,
);

/// The compiled control snapshot as seen from Python.
#[pyclass(frozen, module = "lectr._core", name = "Router")]
pub struct PyRouter {
    control: Arc<Control>,
}

#[pymethods]
impl PyRouter {
    /// keys: (public prefix, SHA-256 of the key, org id); orgs: (id, name,
    /// disabled, azure endpoint, azure api version); rules: `RuleRow`s;
    /// chains: (org id, scope, [(provider, model)], statuses that move on).
    #[new]
    #[allow(clippy::type_complexity)]
    fn new(
        keys: Vec<(String, Vec<u8>, String)>,
        orgs: Vec<(String, String, bool, Option<String>, Option<String>)>,
        rules: Vec<RuleRow>,
        chains: Vec<(String, String, Vec<(String, String)>, Vec<u16>)>,
    ) -> PyResult<Self> {
        let mut c = Control::default();
        for (prefix, hash, org) in keys {
            let hash: [u8; 32] = hash.try_into().map_err(|_| {
                pyo3::exceptions::PyValueError::new_err("a key hash is 32 bytes (SHA-256)")
            })?;
            c.keys.insert(prefix, (hash, org));
        }
        for (id, name, disabled, azure_endpoint, azure_api_version) in orgs {
            let org = Org {
                id: id.clone(),
                name,
                disabled,
                azure_endpoint,
                azure_api_version,
            };
            c.orgs.insert(id, org);
        }
        for (org, id, mf, mt, mp, mm, tp, tm, split) in rules {
            c.rules.entry(org).or_default().push(Rule {
                id,
                match_feature: mf,
                match_task: mt,
                match_provider: mp,
                match_model: mm,
                target_provider: tp,
                target_model: tm,
                split_percent: split,
            });
        }
        for (org, scope, targets, on_status) in chains {
            let chain = Chain { targets, on_status };
            c.chains.entry(org).or_default().insert(scope, chain);
        }
        Ok(PyRouter {
            control: Arc::new(c),
        })
    }

    /// The id of the org owning `key`; raises `Refused` (missing, invalid,
    /// revoked key; disabled org).
    fn org_id(&self, key: Option<&str>) -> PyResult<String> {
        Ok(self.control.org_for_key(key)?.id.clone())
    }

    /// A request's decisions, from what the client sent: the org (from
    /// `org_id`), the endpoint's protocol and upstream path, the tags, the
    /// `X-Lectr-Provider` value, the body (None for a bodiless endpoint),
    /// the query string and a uniform draw in [0, 1) for split rules.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (catalog, org_id, protocol, path, client_path, feature, task, provider, body, query, roll))]
    fn plan(
        &self,
        catalog: &Bound<'_, PyCatalog>,
        org_id: &str,
        protocol: &str,
        path: &str,
        client_path: &str,
        feature: &str,
        task: Option<&str>,
        provider: Option<&str>,
        body: Option<Bound<'_, PyBytes>>,
        query: &str,
        roll: f64,
    ) -> PyResult<PyPlan> {
        let cat = catalog.get();
        let c = &cat.inner;
        let org = self
            .control
            .orgs
            .get(org_id)
            .ok_or_else(|| refusal("invalid_lectr_key", "unknown org"))?;
        let info = match &body {
            None => None,
            Some(b) => {
                let info = peek(b.as_bytes())
                    .map_err(|e| refusal("invalid_request", e.message().to_owned()))?;
                if info.model.is_none() {
                    return Err(refusal("invalid_request", "request body has no 'model'").into());
                }
                Some(info)
            }
        };
        let model = info.as_ref().and_then(|i| i.model.as_deref());
        let (mut detected, unknown) = c
            .detect(model, provider)
            .map_err(|r| refused(r, model, None))?;
        if unknown {
            // A model we do not recognise goes to the protocol's own provider.
            detected = c.default_for(protocol).unwrap_or(detected);
        }
        if !c.serves(protocol, detected) {
            let message = format!(
                "{} has no {client_path} endpoint; it is served by: {}",
                cat.name(detected),
                c.served_names(protocol)
            );
            let r = refusal("unsupported_endpoint", message);
            return Err(refused(r, model, Some(cat.name(detected))));
        }
        let route = self
            .control
            .route(c, org_id, protocol, feature, task, detected, model, roll);
        let chain = self.control.chain(org_id, feature).cloned();
        let stream = info.as_ref().is_some_and(|i| i.stream);
        let inject =
            protocol == "chat" && stream && !info.as_ref().is_some_and(|i| i.include_usage);
        Ok(PyPlan {
            catalog: catalog.clone().unbind(),
            org: org.clone(),
            protocol: protocol.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            body: body.map(Bound::unbind),
            info,
            detected,
            unknown,
            route,
            chain,
            inject,
        })
    }
}

/// A request's decisions: its route and failover path.
#[pyclass(frozen, module = "lectr._core", name = "Plan")]
pub struct PyPlan {
    catalog: Py<PyCatalog>,
    org: Org,
    protocol: String,
    path: String,
    query: String,
    body: Option<Py<PyBytes>>,
    info: Option<RequestInfo>,
    detected: usize,
    unknown: bool,
    route: Route,
    chain: Option<Chain>,
    inject: bool,
}

/// One step of a failover path; `Plan.prepare` makes its URL and body,
/// only for the hop that is sent.
#[pyclass(frozen, module = "lectr._core", name = "Hop")]
pub struct PyHop {
    /// The provider's name.
    #[pyo3(get)]
    provider: String,
    /// The model sent (None for a bodiless request).
    #[pyo3(get)]
    model: Option<String>,
    /// How the provider takes its key.
    #[pyo3(get)]
    auth_style: String,
    /// The provider's index in the catalog.
    index: usize,
}

#[pymethods]
impl PyPlan {
    /// The model the client asked for.
    #[getter]
    fn model(&self) -> Option<&str> {
        self.info.as_ref().and_then(|i| i.model.as_deref())
    }

    /// The model the route sends to (None: as requested, bodiless).
    #[getter]
    fn route_model(&self) -> Option<&str> {
        self.route.model.as_deref()
    }

    /// Whether the client asked for a stream.
    #[getter]
    fn stream(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.stream)
    }

    /// Whether the gateway asks the provider for streamed usage.
    #[getter]
    fn inject_usage(&self) -> bool {
        self.inject
    }

    /// The client's output cap, if it set one.
    #[getter]
    fn max_tokens(&self) -> Option<u64> {
        self.info.as_ref().and_then(|i| i.max_tokens)
    }

    /// The provider the request was for (by model or override).
    #[getter]
    fn provider(&self) -> String {
        self.catalog.get().name(self.detected)
    }

    /// Whether that provider was a guess.
    #[getter]
    fn provider_unknown(&self) -> bool {
        self.unknown
    }

    /// The rule that decided the route, if one did.
    #[getter]
    fn rule_id(&self) -> Option<&str> {
        self.route.rule_id.as_deref()
    }

    /// Provider statuses that move the request on to the next hop.
    #[getter]
    fn retry_on(&self) -> Vec<u16> {
        self.chain
            .as_ref()
            .map(|c| c.on_status.clone())
            .unwrap_or_default()
    }

    /// The same plan with the route's model set by policy (a budget's
    /// cheaper model), and `rule_id` as the rule that decided it.
    fn overridden(&self, py: Python<'_>, model: &str, rule_id: &str) -> PyPlan {
        PyPlan {
            catalog: self.catalog.clone_ref(py),
            org: self.org.clone(),
            protocol: self.protocol.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            body: self.body.as_ref().map(|b| b.clone_ref(py)),
            info: self.info.clone(),
            detected: self.detected,
            unknown: self.unknown,
            route: Route {
                provider: self.route.provider,
                model: Some(model.to_owned()),
                rule_id: Some(rule_id.to_owned()),
            },
            chain: self.chain.clone(),
            inject: self.inject,
        }
    }

    /// The failover path: the route, then the chain's targets that differ
    /// from it and answer the protocol.
    fn hops(&self) -> Vec<PyHop> {
        let cat = self.catalog.get();
        let c = &cat.inner;
        let first = (
            self.route.provider,
            self.route.model.clone().unwrap_or_default(),
        );
        let mut targets = vec![first.clone()];
        for (p, m) in self.chain.iter().flat_map(|ch| ch.targets.iter()) {
            let Some(i) = c.index(p) else { continue };
            if (i, m.clone()) != first && c.serves(&self.protocol, i) {
                targets.push((i, m.clone()));
            }
        }
        let requested = self.model();
        targets
            .into_iter()
            .map(|(i, m)| {
                let target_model = Some(m).filter(|m| !m.is_empty());
                PyHop {
                    provider: cat.name(i),
                    model: target_model.as_deref().or(requested).map(str::to_owned),
                    auth_style: c
                        .provider(i)
                        .map(|p| p.auth_style.clone())
                        .unwrap_or_default(),
                    index: i,
                }
            })
            .collect()
    }

    /// (URL, body) to send `hop`; raises `Refused` when the hop cannot be
    /// called (Azure not configured for the org, a bad deployment name).
    fn prepare(&self, py: Python<'_>, hop: &PyHop) -> PyResult<(String, Py<PyBytes>)> {
        let c = &self.catalog.get().inner;
        // The URL names the model the hop sends (Azure's deployment): a
        // target that keeps the request's model addresses that one.
        let url = c.url(
            hop.index,
            &self.path,
            hop.model.as_deref(),
            &self.org,
            &self.query,
        )?;
        Ok((url, self.body_for(py, hop.model.as_deref())))
    }
}

impl PyPlan {
    fn body_for(&self, py: Python<'_>, model: Option<&str>) -> Py<PyBytes> {
        let (Some(body), Some(info)) = (&self.body, &self.info) else {
            return PyBytes::new(py, b"").unbind();
        };
        match rewrite(body.bind(py).as_bytes(), info, model, self.inject) {
            None => body.clone_ref(py),
            Some(out) => PyBytes::new(py, &out).unbind(),
        }
    }
}

/// Register the decision types on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCatalog>()?;
    m.add_class::<PyRouter>()?;
    m.add_class::<PyPlan>()?;
    m.add_class::<PyHop>()?;
    Ok(())
}
