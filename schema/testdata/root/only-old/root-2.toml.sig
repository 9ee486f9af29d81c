[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIDeqxThWKZ358soEZIYJ9E250a/A/iRIAB6StoVlCSW9AiBMlxK8Yk7XfKTEnGKLPUZSXWygRFCRI0qR2PER1saAsg=="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIDoQ1IHox/Eg1yD3ZN1h/Pj++kd2Ao75XxkZPbxSTdO3AiByCt88D38qdqV5BOQmXq/tYubpeT0mBee9Dsj7dE4M7Q=="
