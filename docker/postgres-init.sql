-- Databases next to the default one (optuna, from POSTGRES_DB): MLflow's backend store and
-- the REST service's studies table. Run once, when the data volume is first initialised.
CREATE DATABASE mlflow;
CREATE DATABASE prefsweep_api;
