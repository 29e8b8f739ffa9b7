"""What hosts instances: the directory of instances, the executor of their side effects,
the group-commit writer, and its commits applied back to the instances."""
