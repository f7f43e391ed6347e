-- Routing rules and fallback chains, per org.
CREATE TABLE routing_rules (
    id              text PRIMARY KEY,
    org_id          text NOT NULL REFERENCES orgs(id),
    name            text NOT NULL,
    priority        integer NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    match_feature   text,
    match_task      text,
    match_provider  text,
    match_model     text,
    target_provider text,
    target_model    text,
    split_percent   integer NOT NULL DEFAULT 100,
    created_at      double precision NOT NULL,
    UNIQUE (org_id, name)
);

-- scope is a feature tag, or '*' for the org's default chain.
CREATE TABLE fallback_chains (
    org_id     text NOT NULL REFERENCES orgs(id),
    scope      text NOT NULL,
    targets    text NOT NULL,
    on_status  text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (org_id, scope)
);

-- Every control-plane change notifies listening instances, whatever wrote it.
CREATE FUNCTION lectr_control_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lectr_control', NEW.version::text);
    RETURN NEW;
END $$;
CREATE TRIGGER control_version_notify AFTER UPDATE ON control_version
    FOR EACH ROW EXECUTE FUNCTION lectr_control_notify();
