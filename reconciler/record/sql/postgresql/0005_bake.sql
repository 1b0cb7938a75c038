-- Issue 15: when the bake of a step ends (the web page's countdown); NULL: no bake (yet).
-- The same column as sqlite/0005_bake.sql.
ALTER TABLE rollout_steps ADD COLUMN bake_until double precision;
