import glob

from setuptools import find_packages, setup

package_name = 'edgeserving_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob.glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob.glob('config/*.yaml')
         + glob.glob('config/*.json') + glob.glob('config/*.xml')),
        ('share/' + package_name + '/config/exit_heads', glob.glob('config/exit_heads/*.pt')),
    ],
    install_requires=['setuptools'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='edgeserving_ros maintainers',
    maintainer_email='maintainers@edgeserving.invalid',
    description='Deadline-aware serving of early-exit DNN models on one shared GPU in ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'edgeserving = edgeserving_ros.node:main',
            'edgeserving-player = edgeserving_ros.player:main',
            'edgeserving-demo = edgeserving_ros.demo:main',
            'edgeserving-profile = edgeserving_ros.profiler:main',
            'edgeserving-train-exits = edgeserving_ros.train_exits:main',
            'edgeserving-bench = edgeserving_ros.bench.cli:main',
        ],
    },
)
