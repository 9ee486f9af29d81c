[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "nLVhIFP9USQTjEhi9vFuWO+BKOX19LmAGJNgXu9ocii+3z613tFZ4pBoe+MCmx3ZB/1NWPi21IFn+IYGeHJfBg=="

[[signature]]
keyid = "95c88f7ef058830100a855240f973699fe0c1e797c2d67c2f859057aa39acefe"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIQCziyyeuRkZ9Tb3xe98KZN21vomy0I8qsSPLJQrNJYK9AIgWczmlL7lQiLbj0cO2VBJtj+pyJCR5mQyvj8tJ9iveBY="
