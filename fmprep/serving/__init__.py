"""Serving a model: the local inference server and SageMaker (training jobs, endpoints,
batch transform) through boto3."""
