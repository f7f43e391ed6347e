"""The request path: the RSGI app, the proxy handler and what it decides with
(auth, providers, routing, the breaker, prices) and the upstream client."""
