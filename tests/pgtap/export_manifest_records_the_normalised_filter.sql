-- compliance.normalize_export_filter writes a filter in the one form export manifests
-- record (format_version 2), so that an offline verifier only compares values: canonical
-- UTC instants, de-duplicated lists sorted by code point whatever the collation, and
-- withhold_payloads always present. It validates first (AC030).
BEGIN;
SELECT plan(6);

SELECT is(compliance.normalize_export_filter('{}'), '{"withhold_payloads": false}'::jsonb,
          'an empty filter records withhold_payloads and nothing else');
SELECT is(compliance.normalize_export_filter('{"from":"2026-01-31T01:00:00+01:00","to":"2026-02-01T00:00:00.5Z"}'),
          '{"from": "2026-01-31T00:00:00.000000Z", "to": "2026-02-01T00:00:00.500000Z", "withhold_payloads": false}'::jsonb,
          'bounds become canonical instants in UTC, whatever their offset');
SELECT is(compliance.normalize_export_filter('{"tenant_ids":["b","B","a","b","é"]}') -> 'tenant_ids',
          '["B", "a", "b", "é"]'::jsonb,
          'tenant_ids are de-duplicated and sorted by code point');
SELECT is(compliance.normalize_export_filter('{"event_types":["user.logout","data.read","user.logout"]}') -> 'event_types',
          '["data.read", "user.logout"]'::jsonb,
          'event_types are de-duplicated and sorted');
SELECT is(compliance.normalize_export_filter('{"tenant_id":"acme","actor":"alice","withhold_payloads":true}'),
          '{"tenant_id": "acme", "actor": "alice", "withhold_payloads": true}'::jsonb,
          'a single tenant and the actor are kept as given');
SELECT throws_ok($$SELECT compliance.normalize_export_filter('{"tenant":"acme"}')$$, 'AC030',
                 'invalid export filter: unknown key "tenant"', 'an invalid filter has no normalised form');

SELECT * FROM finish();
ROLLBACK;
