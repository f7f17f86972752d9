"""The FM model: its files, hyperparameter contract, trainers (SGD, MCMC), the ranking
model, evaluation and SageMaker artifacts."""
