"""Small helpers shared by unit tests (not a test module)."""

from snn.parameters import Parameters


def tiny_parameters(epochs: int = 2) -> Parameters:
    return Parameters.from_dict(
        {
            "epochs": epochs,
            "layers": 2,
            "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 2, "layer2": 1},
            "learning_rate": 0.05,
        }
    )
