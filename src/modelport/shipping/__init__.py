"""Shipping: what is written at ship time from registered versions: container images, Kubernetes,
KServe and VM files, CI workflows, monitoring files, and the AWS callers (SageMaker, Lambda)."""
