DROP TABLE run_owners;
