[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "vDWQZX3WWQgyy8rPTDz8TzCGadBywMxLB4i3VNN+aNOfJm6JotQ+bHtKOw2BC9Ns9yiY6+jsY8OwVNX0FE6sBA=="

[[signature]]
keyid = "95c88f7ef058830100a855240f973699fe0c1e797c2d67c2f859057aa39acefe"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIQCglkBObaYF7rzBGMJu47Vr6dUr4Xr4k4csT/LRAV6SkAIgQIUqbIMrd49daCtNUGwFpb3QKvyKa9SLAFIhOY4jbRk="
