"""The trained steering vector (a bias added at MLP outputs): loss, loop, Tune arms, paper-style evaluation."""
