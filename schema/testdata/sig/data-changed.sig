[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCID6G3JQwgUUBhHuqYYkulICM/qpy5TCWpuNh+TgCPFYHAiEAgaxyyEPyHqcrO9OWQ6qepWEdCPiU5ABZxevIdPMlDpU="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIHnCutwH91aUpkTWC/GG03l6wVgxcifHhYvBR1aEbsK3AiAbJYHSnuMKmcQFmw+zb/w+Ai3LTcEFjBxew32+B8P9Fw=="
