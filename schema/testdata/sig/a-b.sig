[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIQDEnLWjskL05ZjZXZ0sSkPfZJXWmid/1h0acl+6erYfwQIgQ0jMWUgHO4aQmdKcAY+1H5rzA7UJUMLGfvfvHPCpXWM="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIDid2pFloYE15DOMhLug0MaffIj30Li1bfC1V52t/OWGAiEAipXgc24VT9V6fjHzV9VquMhoBRCMj+xSfk1ggGvu9Dw="
