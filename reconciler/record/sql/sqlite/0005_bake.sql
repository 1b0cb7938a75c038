-- Issue 15: when the bake of a step ends (the web page's countdown); NULL: no bake (yet).
ALTER TABLE rollout_steps ADD COLUMN bake_until REAL;
