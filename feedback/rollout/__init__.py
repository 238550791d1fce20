"""Rolling a model out to the devices: publish (export, parity, reference set), deployments and
canary judgment in the catalog, and the desired state the stateless API answers devices from.
"""
