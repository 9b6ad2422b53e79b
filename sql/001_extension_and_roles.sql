-- TimescaleDB and the three least-privilege roles.
-- Roles are created without passwords: deployment sets them (ALTER ROLE ... PASSWORD), so no
-- secret ever lives in the repository. Roles are cluster-wide, hence the existence checks.
CREATE EXTENSION IF NOT EXISTS timescaledb;

DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['collector', 'trading_bot', 'grafana_reader'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT', r);
    END IF;
  END LOOP;
END $$;

DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO collector, trading_bot, grafana_reader', current_database());
END $$;
GRANT USAGE ON SCHEMA public TO collector, trading_bot, grafana_reader;
-- Nobody but the owner creates objects in public (PostgreSQL 15 default, restated for older clusters).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
