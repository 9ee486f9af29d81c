[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIGoAjwaY0KMoWtcaw5huyj9NOQPeiem/Ir1zV6UFUFGlAiA7mNzUjiQT5p4S+cQaXvrY+pyl81TkhZSLRArLprpfwg=="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIEoRCHhHdTEYAfqV/ZpwvPiIuYgj4Yo9lCVWAAhb1Jf0AiEA+vuFKcjCeopLFFvkQ0/K98NDWtLWKJedVlny6g1v+IU="

[[signature]]
keyid = "95c88f7ef058830100a855240f973699fe0c1e797c2d67c2f859057aa39acefe"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIQCwpcAFLYJIjuPyMPcP8uUZutix1IV98ep2Mov1ZsMblQIgXA0aCM/lbhR6NfYJG1Y4o01Op2PqXuEpLV661Wx1Ayw="
