"""The training service: experiments that run Optuna studies and register the best model.

``__main__`` serves the gRPC API; ``worker`` runs studies pulled from the JetStream work queue.
"""
