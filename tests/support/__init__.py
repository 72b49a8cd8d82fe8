"""What the tests share: real models, servers, registries and services to run them against."""
