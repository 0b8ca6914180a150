-- Runs once, when the postgres service's volume is first initialised: Dagster's instance storage
-- lives in a database of its own beside the market database.
CREATE DATABASE dagster;
